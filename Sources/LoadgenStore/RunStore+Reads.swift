import Foundation
import GRDB
import LoadgenCore

/// A run as `history` lists it.
public struct RunListing: Sendable, Hashable, Codable {
    public var runID: String
    public var label: String?
    public var workload: String
    public var mode: String
    public var workers: Int
    public var agents: Int
    public var status: String
    public var target: String
    public var startedAt: String
    public var endedAt: String?
    public var durationS: Double?
    public var ops: Int64
    public var errors: Int64
    public var opsPerS: Double?
    public var mibPerS: Double?
    public var p50Us: Double?
    public var p99Us: Double?
    public var message: String?
}

/// What `history` may filter on.
public struct RunFilter: Sendable {
    public var label: String?
    public var workload: String?
    public var mode: String?
    public var status: String?
    /// Runs started at or after this wall-clock instant (ns since the epoch).
    public var sinceWallNanos: UInt64?
    public var limit: Int

    public init(label: String? = nil, workload: String? = nil, mode: String? = nil, status: String? = nil,
                sinceWallNanos: UInt64? = nil, limit: Int = 20) {
        self.label = label
        self.workload = workload
        self.mode = mode
        self.status = status
        self.sinceWallNanos = sinceWallNanos
        self.limit = limit
    }
}

/// One stored interval, for `history show`.
public struct StoredInterval: Sendable, Hashable, Codable {
    public var agent: String
    public var phase: String
    public var seq: Int
    public var elapsedS: Double
    public var ops: Int64
    public var bytes: Int64
    public var errors: Int64
    public var errorsByKind: [String: UInt64]
    public var opsPerS: Double
    public var p50Us: Double?
    public var p99Us: Double?
    public var maxUs: Double?
}

// MARK: - Database Access: Reads

extension RunStore {
    /// Runs newest first, filtered.
    public func listRuns(_ filter: RunFilter) throws(LoadgenError) -> [RunListing] {
        try self.read { db in
            var clauses: [String] = []
            var arguments: [any DatabaseValueConvertible] = []
            if let label = filter.label { clauses.append("label = ?"); arguments.append(label) }
            if let workload = filter.workload { clauses.append("workload = ?"); arguments.append(workload) }
            if let mode = filter.mode { clauses.append("mode = ?"); arguments.append(mode) }
            if let status = filter.status { clauses.append("status = ?"); arguments.append(status) }
            if let since = filter.sinceWallNanos { clauses.append("startedAtNanos >= ?"); arguments.append(Int64(since)) }
            let whereClause = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
            arguments.append(filter.limit)
            return try Row.fetchAll(db, sql: """
                SELECT id, label, workload, mode, workers, agentCount, status, target, startedAt, endedAt, durationNanos,
                       ops, errors, opsPerSecond, mibPerSecond, p50Micros, p99Micros, message
                FROM run \(whereClause) ORDER BY startedAtNanos DESC, id DESC LIMIT ?
                """, arguments: StatementArguments(arguments)).map(Self.listing)
        }
    }

    private static func listing(_ row: Row) -> RunListing {
        RunListing(runID: row["id"], label: row["label"], workload: row["workload"], mode: row["mode"],
                   workers: row["workers"], agents: row["agentCount"], status: row["status"], target: row["target"],
                   startedAt: row["startedAt"], endedAt: row["endedAt"],
                   durationS: (row["durationNanos"] as Int64?).map { Double($0) / 1e9 }, ops: row["ops"],
                   errors: row["errors"], opsPerS: row["opsPerSecond"], mibPerS: row["mibPerSecond"],
                   p50Us: row["p50Micros"], p99Us: row["p99Micros"], message: row["message"])
    }

    /// The run id a person typed: an exact id, a unique prefix, `last`, or `last~N` (the N-th before the last).
    public func resolveRunID(_ text: String) throws(LoadgenError) -> String {
        if text == "last" || text.hasPrefix("last~") {
            let back = text == "last" ? 0 : Int(text.dropFirst(5))
            guard let back, back >= 0 else {
                throw .usage("'\(text)' is not a run: use a run id, a unique prefix of one, last, or last~N.")
            }
            let id: String? = try self.read { db in
                try String.fetchOne(db, sql: "SELECT id FROM run ORDER BY startedAtNanos DESC, id DESC LIMIT 1 OFFSET ?",
                                    arguments: [back])
            }
            guard let id else { throw .usage("There is no run '\(text)': the store holds fewer runs.") }
            return id
        }
        let matches: [String] = try self.read { db in
            if try String.fetchOne(db, sql: "SELECT id FROM run WHERE id = ?", arguments: [text]) != nil { return [text] }
            let escaped = text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
                .replacingOccurrences(of: "_", with: "\\_")
            return try String.fetchAll(db, sql: "SELECT id FROM run WHERE id LIKE ? ESCAPE '\\' LIMIT 3",
                                       arguments: [escaped + "%"])
        }
        switch matches.count {
        case 0: throw .usage("There is no run '\(text)' in the store.")
        case 1: return matches[0]
        default: throw .usage("'\(text)' matches several runs (\(matches.joined(separator: ", ")), ...): give more of the id.")
        }
    }

    /// The report of a run: as the coordinator printed it, or rebuilt from what was stored for a run still going.
    public func report(runID: String) throws(LoadgenError) -> RunReport? {
        let stored: (String?, UInt64, String)? = try self.read { db in
            try Row.fetchOne(db, sql: "SELECT report, startedAtNanos, loadgenVersion FROM run WHERE id = ?", arguments: [runID])
                .map { ($0["report"], UInt64($0["startedAtNanos"] as Int64), $0["loadgenVersion"]) }
        }
        guard let (json, started, version) = stored else { return nil }
        if let json, let report = try? FrameCodec.makeDecoder().decode(RunReport.self, from: Data(json.utf8)) {
            return report
        }
        guard let aggregate = try self.loadAggregate(runID: runID) else { return nil }
        return RunReport(aggregate: aggregate, startedAtWallNanos: started, endedAtWallNanos: MonotonicClock.wallNanos(),
                         loadgenVersion: version, message: nil)
    }

    /// A run's interval series, per agent and phase, in order.
    public func intervals(runID: String) throws(LoadgenError) -> [StoredInterval] {
        try self.read { db in
            var previous: [String: Int64] = [:]
            return try Row.fetchAll(db, sql: """
                SELECT a.agentID, i.phase, i.seq, i.elapsedNanos, i.ops, i.bytes, i.errors, i.errorsByKind, i.p50Micros,
                       i.p99Micros, i.maxMicros
                FROM intervalReport i JOIN runAgent a ON a.runID = i.runID AND a.agentIndex = i.agentIndex
                WHERE i.runID = ? ORDER BY i.agentIndex, CASE i.phase WHEN 'main' THEN 0 ELSE 1 END, i.seq
                """, arguments: [runID]).map { row in
                let agent: String = row["agentID"]
                let phase: String = row["phase"]
                let elapsed: Int64 = row["elapsedNanos"]
                let key = agent + "/" + phase
                let span = max(1, elapsed - (previous[key] ?? 0))
                previous[key] = elapsed
                let ops: Int64 = row["ops"]
                let kinds = (try? FrameCodec.makeDecoder().decode(ErrorCounts.self, from: Data((row["errorsByKind"] as String).utf8)))?.dictionary ?? [:]
                return StoredInterval(agent: agent, phase: phase, seq: row["seq"], elapsedS: Double(elapsed) / 1e9,
                                      ops: ops, bytes: row["bytes"], errors: row["errors"], errorsByKind: kinds,
                                      opsPerS: Double(ops) / (Double(span) / 1e9), p50Us: row["p50Micros"],
                                      p99Us: row["p99Micros"], maxUs: row["maxMicros"])
            }
        }
    }

    /// Rebuilds a run's aggregate from its stored request, agents and intervals (for runs that never finished).
    func loadAggregate(runID: String) throws(LoadgenError) -> RunAggregate? {
        typealias Loaded = (String, [RunAggregate.AgentState], [(Int, String)])
        let loaded: Loaded? = try self.read { db in
            guard let requestJSON = try String.fetchOne(db, sql: "SELECT request FROM run WHERE id = ?", arguments: [runID]) else {
                return nil
            }
            let agents = try Row.fetchAll(db, sql: "SELECT * FROM runAgent WHERE runID = ? ORDER BY agentIndex", arguments: [runID]).map { row in
                var state = RunAggregate.AgentState(agentID: row["agentID"], host: row["host"], address: row["address"],
                                                    rttNanos: UInt64(row["rttNanos"] as Int64),
                                                    clockOffsetNanos: row["clockOffsetNanos"])
                state.status = RunStatus(rawValue: row["status"]) ?? .running
                state.message = row["message"]
                state.runDirectory = row["runDirectory"]
                return state
            }
            let intervals = try Row.fetchAll(db, sql: """
                SELECT agentIndex, phase, seq, elapsedNanos, ops, bytes, errorsByKind, histogram, latencySumNanos FROM intervalReport
                WHERE runID = ? ORDER BY agentIndex, seq
                """, arguments: [runID]).map { row -> (Int, String) in
                let json = #"{"run_id":"\#(runID)","phase":"\#(row["phase"] as String)","seq":\#(row["seq"] as Int),"elapsed_nanos":\#(row["elapsedNanos"] as Int64),"ops":\#(row["ops"] as Int64),"bytes":\#(row["bytes"] as Int64),"errors":\#(row["errorsByKind"] as String),"error_samples":{},"latency":\#(row["histogram"] as String),"latency_sum_nanos":\#(row["latencySumNanos"] as Int64)}"#
                return (row["agentIndex"], json)
            }
            return (requestJSON, agents, intervals)
        }
        guard let (requestJSON, agents, intervals) = loaded,
              let request = try? FrameCodec.makeDecoder().decode(RunRequest.self, from: Data(requestJSON.utf8))
        else { return nil }
        var aggregate = RunAggregate(request: request, agents: agents)
        let decoder = FrameCodec.makeDecoder()
        for (index, json) in intervals where index < aggregate.agents.count {
            if let interval = try? decoder.decode(WireMessage.Interval.self, from: Data(json.utf8)) {
                _ = try? aggregate.apply(agent: index, interval: interval)
            }
        }
        return aggregate
    }
}
