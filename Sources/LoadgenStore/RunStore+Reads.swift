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
    /// valid, suspect or invalid (nil: stored before validity was judged, or still running).
    public var validity: String?
    /// The set the run belongs to, if any.
    public var setID: String?
}

/// What `history` may filter on.
public struct RunFilter: Sendable {
    public var label: String?
    public var workload: String?
    public var mode: String?
    public var status: String?
    /// Runs started at or after this wall-clock instant (ns since the epoch).
    public var sinceWallNanos: UInt64?
    /// Only the runs of this set.
    public var setID: String?
    public var limit: Int

    public init(label: String? = nil, workload: String? = nil, mode: String? = nil, status: String? = nil,
                sinceWallNanos: UInt64? = nil, setID: String? = nil, limit: Int = 20) {
        self.setID = setID
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
            var query = RunRow.all()
            if let label = filter.label { query = query.filter(RunRow.Columns.label == label) }
            if let workload = filter.workload { query = query.filter(RunRow.Columns.workload == workload) }
            if let mode = filter.mode { query = query.filter(RunRow.Columns.mode == mode) }
            if let status = filter.status { query = query.filter(RunRow.Columns.status == status) }
            if let since = filter.sinceWallNanos { query = query.filter(RunRow.Columns.startedAtNanos >= Int64(since)) }
            if let set = filter.setID { query = query.filter(RunRow.Columns.setID == set) }
            return try query.order(RunRow.Columns.startedAtNanos.desc, RunRow.Columns.id.desc).limit(filter.limit)
                .fetchAll(db).map(\.listing)
        }
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

    /// The report of a run, computed from what its agents reported (its intervals and phase_dones) by the code the
    /// coordinator ran, so a finished run's report is the one it printed; a run still going gets its report so far.
    /// Runs stored by a loadgen before migration 0002 are read from the report they kept.
    public func report(runID: String) throws(LoadgenError) -> RunReport? {
        guard let run: RunRow = try self.read({ db in try RunRow.fetchOne(db, key: runID) }) else { return nil }
        if let json = run.report, let report = try? FrameCodec.makeDecoder().decode(RunReport.self, from: Data(json.utf8)) {
            return report
        }
        guard let aggregate = try self.loadAggregate(runID: runID) else { return nil }
        return RunReport(aggregate: aggregate, startedAtWallNanos: UInt64(run.startedAtNanos),
                         endedAtWallNanos: run.endedAtNanos.map { UInt64($0) } ?? MonotonicClock.wallNanos(),
                         loadgenVersion: run.loadgenVersion, message: run.message)
    }

    /// A run's interval series, per agent and phase, in order.
    public func intervals(runID: String) throws(LoadgenError) -> [StoredInterval] {
        try self.read { db in
            let agents = try AgentRow.filter(AgentRow.Columns.runID == runID).fetchAll(db)
            let names = Dictionary(agents.map { ($0.agentIndex, $0.agentID) }, uniquingKeysWith: { a, _ in a })
            let rows = try IntervalRow.filter(IntervalRow.Columns.runID == runID)
                .order(IntervalRow.Columns.agentIndex, SQL("CASE phase WHEN 'main' THEN 0 WHEN 'stat' THEN 1 WHEN 'read' THEN 2 ELSE 3 END"), IntervalRow.Columns.seq)
                .fetchAll(db)
            var previous: [String: Int64] = [:]
            return rows.compactMap { row -> StoredInterval? in
                guard let agent = names[row.agentIndex] else { return nil }
                let key = agent + "/" + row.phase
                let span = max(1, row.elapsedNanos - (previous[key] ?? 0))
                previous[key] = row.elapsedNanos
                let kinds = (try? FrameCodec.makeDecoder().decode(ErrorCounts.self, from: Data(row.errorsByKind.utf8)))?.dictionary ?? [:]
                return StoredInterval(agent: agent, phase: row.phase, seq: row.seq, elapsedS: Double(row.elapsedNanos) / 1e9,
                                      ops: row.ops, bytes: row.bytes, errors: row.errors, errorsByKind: kinds,
                                      opsPerS: Double(row.ops) / (Double(span) / 1e9), p50Us: row.p50Micros,
                                      p99Us: row.p99Micros, maxUs: row.maxMicros)
            }
        }
    }

    /// Rebuilds a run's aggregate from its stored request, agents, intervals and phase_dones: what the coordinator
    /// held when the run ended (or, for a run that never finished, when its last report was stored).
    func loadAggregate(runID: String) throws(LoadgenError) -> RunAggregate? {
        typealias Loaded = (RunRow, [AgentRow], [IntervalRow], [PhaseDoneRecord])
        let loaded: Loaded? = try self.read { db in
            guard let run = try RunRow.fetchOne(db, key: runID) else { return nil }
            let agents = try AgentRow.filter(AgentRow.Columns.runID == runID).order(AgentRow.Columns.agentIndex).fetchAll(db)
            let intervals = try IntervalRow.filter(IntervalRow.Columns.runID == runID)
                .order(IntervalRow.Columns.agentIndex, IntervalRow.Columns.seq).fetchAll(db)
            let dones = try PhaseDoneRecord.filter(PhaseDoneRecord.Columns.runID == runID).fetchAll(db)
            return (run, agents, intervals, dones)
        }
        guard let (run, agentRows, intervals, dones) = loaded,
              let request = try? FrameCodec.makeDecoder().decode(RunRequest.self, from: Data(run.request.utf8))
        else { return nil }
        var aggregate = RunAggregate(request: request, agents: agentRows.map { row in
            RunAggregate.AgentState(agentID: row.agentID, host: row.host, address: row.address,
                                    rttNanos: UInt64(bitPattern: row.rttNanos), clockOffsetNanos: row.clockOffsetNanos,
                                    cores: row.cores)
        })
        let count = aggregate.agents.count
        for row in intervals where row.agentIndex < count {
            if let interval = try? row.interval() { _ = try? aggregate.apply(agent: row.agentIndex, interval: interval) }
        }
        for record in dones where record.agentIndex < count {
            if let done = record.done { aggregate.apply(agent: record.agentIndex, phaseDone: done) }
        }
        // How each agent ended, as the coordinator recorded it.
        for (index, row) in agentRows.enumerated() {
            aggregate.agents[index].status = RunStatus(rawValue: row.status) ?? .running
            aggregate.agents[index].message = row.message
            aggregate.agents[index].runDirectory = row.runDirectory
        }
        return aggregate
    }
}

/// One interval of a run across all its agents: the agents' reports of the same tick merged (they tick together,
/// from one start), the percentiles read from the merged histogram.
public struct ClusterPoint: Sendable, Hashable, Codable {
    public var phase: String
    public var seq: Int
    /// The latest of the agents' elapsed times for this tick.
    public var elapsedS: Double
    public var ops: Int64
    public var errors: Int64
    /// The sum of the agents' rates in this interval (each over its own interval's length).
    public var opsPerS: Double
    public var p50Us: Double?
    public var p99Us: Double?
}

extension RunStore {
    /// The run's series with the agents merged, per phase and tick, in order.
    public func clusterSeries(runID: String) throws(LoadgenError) -> [ClusterPoint] {
        let rows: [IntervalRow] = try self.read { db in
            try IntervalRow.filter(IntervalRow.Columns.runID == runID)
                .order(SQL("CASE phase WHEN 'mkdir' THEN 0 WHEN 'main' THEN 1 WHEN 'stat' THEN 2 WHEN 'read' THEN 3 ELSE 4 END"),
                       IntervalRow.Columns.seq, IntervalRow.Columns.agentIndex)
                .fetchAll(db)
        }
        var points: [ClusterPoint] = []
        var latency = LatencyCounts()
        var previous: [String: Int64] = [:]
        func close() {
            guard var last = points.last, !latency.isEmpty else { return }
            let histogram = latency.histogram()
            last.p50Us = Double(histogram.valueAtPercentile(50)) / 1000
            last.p99Us = Double(histogram.valueAtPercentile(99)) / 1000
            points[points.count - 1] = last
        }
        for row in rows {
            if points.last?.phase != row.phase || points.last?.seq != row.seq {
                close()
                latency = LatencyCounts()
                points.append(ClusterPoint(phase: row.phase, seq: row.seq, elapsedS: 0, ops: 0, errors: 0, opsPerS: 0))
            }
            let key = "\(row.agentIndex)/\(row.phase)"
            let span = max(1, row.elapsedNanos - (previous[key] ?? 0))
            previous[key] = row.elapsedNanos
            points[points.count - 1].elapsedS = max(points[points.count - 1].elapsedS, Double(row.elapsedNanos) / 1e9)
            points[points.count - 1].ops += row.ops
            points[points.count - 1].errors += row.errors
            points[points.count - 1].opsPerS += Double(row.ops) / (Double(span) / 1e9)
            if let interval = try? row.interval() { _ = try? latency.add(interval.latency) }
        }
        close()
        return points
    }

    /// The run's merged latency histogram for a phase, as (bucket's highest value in nanoseconds, count) pairs in
    /// order; empty for a run stored before intervals were kept whole.
    public func latencyBuckets(runID: String, phase: Phase = .main) throws(LoadgenError) -> [(valueNanos: UInt64, count: UInt64)] {
        guard let aggregate = try self.loadAggregate(runID: runID) else { return [] }
        var merged = LatencyCounts()
        for agent in aggregate.agents { if let state = agent.phases[phase] { merged.add(state.latency) } }
        let sparse = merged.sparse
        return zip(sparse.values, sparse.counts).map { ($0, $1) }
    }
}

extension RunStore {
    /// Sets newest first.
    public func listSets(limit: Int) throws(LoadgenError) -> [RunSetRecord] {
        try self.read { db in
            try RunSetRecord.order(RunSetRecord.Columns.startedAtNanos.desc).limit(limit).fetchAll(db)
        }
    }

    public func set(id: String) throws(LoadgenError) -> RunSetRecord? {
        try self.read { db in try RunSetRecord.fetchOne(db, key: id) }
    }

    /// The ids of a set's runs, in the order they ran.
    public func runIDs(inSet id: String) throws(LoadgenError) -> [String] {
        try self.read { db in
            try String.fetchAll(db, sql: "SELECT id FROM run WHERE setID = ? ORDER BY startedAtNanos, id", arguments: [id])
        }
    }

    /// The set a person typed: an exact id or a unique prefix of one (nil when it names no set).
    public func resolveSetID(_ text: String) throws(LoadgenError) -> String? {
        guard text.hasPrefix("set-") || text.hasPrefix("search-") else { return nil }
        let matches: [String] = try self.read { db in
            if try String.fetchOne(db, sql: "SELECT id FROM runSet WHERE id = ?", arguments: [text]) != nil { return [text] }
            let escaped = text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
                .replacingOccurrences(of: "_", with: "\\_")
            return try String.fetchAll(db, sql: "SELECT id FROM runSet WHERE id LIKE ? ESCAPE '\\' LIMIT 3", arguments: [escaped + "%"])
        }
        switch matches.count {
        case 0: throw .usage("There is no set '\(text)' in the store.")
        case 1: return matches[0]
        default: throw .usage("'\(text)' matches several sets (\(matches.joined(separator: ", ")), ...): give more of the id.")
        }
    }
}
