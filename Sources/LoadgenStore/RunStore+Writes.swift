import Foundation
import GRDB
import LoadgenCore

/// One interval report as stored.
public struct IntervalRecord: Sendable {
    public var runID: String
    public var agentIndex: Int
    public var interval: WireMessage.Interval
    public var receivedAtWallNanos: UInt64
    /// The interval's p50, p99 and max, when already read (the coordinator reads them while merging).
    public var latency: IntervalLatency?

    public init(runID: String, agentIndex: Int, interval: WireMessage.Interval, receivedAtWallNanos: UInt64,
                latency: IntervalLatency? = nil) {
        self.runID = runID
        self.agentIndex = agentIndex
        self.interval = interval
        self.receivedAtWallNanos = receivedAtWallNanos
        self.latency = latency
    }
}

/// A run the store found left `running` by a coordinator that is gone, now marked aborted.
public struct AbandonedRun: Sendable, Hashable {
    /// Where one agent's run directory was (on that agent's host), for `loadgen clean`.
    public struct Directory: Sendable, Hashable {
        public var agentID: String
        public var address: String
        public var path: String
    }

    public var runID: String
    /// The write run's target; nil for a fetch run, which leaves nothing on disk.
    public var target: String?
    /// The run was given --keep: its files are meant to stay, and `loadgen clean` needs --kept for them.
    public var keep: Bool
    public var directories: [Directory]
}

/// An agent of a run, as stored when the run starts.
public struct AgentRecord: Sendable {
    public var index: Int
    public var agentID: String
    public var host: String
    public var address: String
    public var cores: Int
    public var loadgenVersion: String
    public var rttNanos: UInt64
    public var clockOffsetNanos: Int64

    public init(index: Int, agentID: String, host: String, address: String, cores: Int, loadgenVersion: String,
                rttNanos: UInt64, clockOffsetNanos: Int64) {
        self.index = index
        self.agentID = agentID
        self.host = host
        self.address = address
        self.cores = cores
        self.loadgenVersion = loadgenVersion
        self.rttNanos = rttNanos
        self.clockOffsetNanos = clockOffsetNanos
    }
}

// MARK: - Database Access: Writes

extension RunStore {
    static func json<T: Encodable>(_ value: T) -> String {
        String(decoding: (try? FrameCodec.makeEncoder().encode(value)) ?? Data("null".utf8), as: UTF8.self)
    }

    /// Records a run that is starting: its full request, its agents, and who is running it.
    public func insertRun(_ request: RunRequest, agents: [AgentRecord], coordinator: ProcessIdentity,
                          loadgenVersion: String, startedAtWallNanos: UInt64) async throws(LoadgenError) {
        let target = request.write?.target ?? request.fetch?.urls.first ?? ""
        // Secret header values and body bytes are not kept (the report names the body files and their sizes).
        let requestJSON = Self.json(request.redacted)
        let startedAt = RunReport.iso8601(wallNanos: startedAtWallNanos)
        try await self.asyncWrite { db in
            try db.execute(sql: """
                INSERT INTO run (id, label, workload, mode, workers, status, target, request, agentCount, loadgenVersion,
                                 coordinatorHost, coordinatorPid, coordinatorStartTicks, bootID, startedAt,
                                 startedAtNanos, lastSeenAtNanos, setID)
                VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [request.runID, request.label, request.workload.rawValue, request.mode.rawValue,
                                 request.workers, target, requestJSON, agents.count, loadgenVersion, coordinator.host,
                                 Int64(coordinator.pid), coordinator.startTicks, coordinator.bootID, startedAt,
                                 Int64(startedAtWallNanos), Int64(startedAtWallNanos), request.setID])
            for agent in agents {
                try db.execute(sql: """
                    INSERT INTO runAgent (runID, agentIndex, agentID, host, address, cores, loadgenVersion, rttNanos,
                                          clockOffsetNanos, status)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running')
                    """, arguments: [request.runID, agent.index, agent.agentID, agent.host, agent.address, agent.cores,
                                     agent.loadgenVersion, Int64(agent.rttNanos), agent.clockOffsetNanos])
            }
        }
    }

    /// Appends a batch of interval reports in one transaction and notes that the run's coordinator is alive.
    public func appendIntervals(_ records: [IntervalRecord], seenAtWallNanos: UInt64) async throws(LoadgenError) {
        guard !records.isEmpty else { return }
        try await self.asyncWrite { db in
            // The interval itself is its protocol-4 body (the canonical form); the other columns are what
            // `history show` lists. `histogram` holds text only in runs stored before migration 0002.
            let statement = try db.cachedStatement(sql: """
                INSERT INTO intervalReport (runID, agentIndex, phase, seq, elapsedNanos, receivedAtNanos, ops, bytes,
                                            errors, errorsByKind, p50Micros, p99Micros, maxMicros, histogram,
                                            latencySumNanos, body)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?)
                """)
            var runs = Set<String>()
            for record in records {
                let i = record.interval
                let latency = record.latency ?? (i.latency.isEmpty ? IntervalLatency() : IntervalLatency(
                    p50Nanos: i.latency.valueAtPercentile(50), p99Nanos: i.latency.valueAtPercentile(99),
                    maxNanos: i.latency.valueAtPercentile(100)))
                func us(_ nanos: UInt64?) -> Double? { nanos.map { Double($0) / 1000 } }
                try statement.execute(arguments: [
                    record.runID, record.agentIndex, i.phase.rawValue, i.seq, Int64(i.elapsedNanos),
                    Int64(record.receivedAtWallNanos), Int64(i.ops), Int64(i.bytes), Int64(i.errors.total),
                    i.errors.isEmpty ? "{}" : Self.json(i.errors), us(latency.p50Nanos), us(latency.p99Nanos),
                    us(latency.maxNanos), Int64(bitPattern: i.latencySumNanos), Data(try i.binaryBody())])
                runs.insert(record.runID)
            }
            for run in runs {
                try db.execute(sql: "UPDATE run SET lastSeenAtNanos = ? WHERE id = ?",
                               arguments: [Int64(seenAtWallNanos), run])
            }
        }
    }

    /// Records how a run ended, all in one transaction: each agent's phase_done (with the intervals, the run as it
    /// is kept), and the run's and agents' summary figures, which history lists and filters by.
    public func finishRun(_ report: RunReport, aggregate: RunAggregate) async throws(LoadgenError) {
        let agentRows = report.perAgent.enumerated().map { index, agent in
            (index, agent, aggregate.agents[index].phase(.main).done)
        }
        let dones: [(Int, WireMessage.PhaseDone)] = aggregate.agents.enumerated().flatMap { index, agent in
            Phase.allCases.compactMap { phase in agent.phases[phase]?.done.map { (index, $0) } }
        }
        let durationNanos = aggregate.clusterDurationNanos(.main)
        let cleanupDuration = aggregate.hasPhase(.cleanup) ? aggregate.clusterDurationNanos(.cleanup) : nil
        let endedAtNanos = RunReport.wallNanos(iso8601: report.endedAt).map { Int64($0) }
        try await self.asyncWrite { db in
            let l = report.latencyUs
            try db.execute(sql: """
                UPDATE run SET status = ?, message = ?, endedAt = ?, endedAtNanos = ?, durationNanos = ?, ops = ?,
                    bytes = ?, errors = ?, opsPerSecond = ?, mibPerSecond = ?, p50Micros = ?, p90Micros = ?,
                    p99Micros = ?, p999Micros = ?, maxMicros = ?, meanMicros = ?, firstDoneNanos = ?, lastDoneNanos = ?,
                    cleanupOps = ?, cleanupDurationNanos = ?, cleanupOpsPerSecond = ?, validity = ?
                WHERE id = ?
                """, arguments: [
                    report.status.rawValue, report.message, report.endedAt, endedAtNanos, Int64(durationNanos),
                    Int64(report.ops), Int64(report.bytes), Int64(report.errors), report.opsPerS, report.mibPerS, l.p50,
                    l.p90, l.p99, l.p999, l.max, l.mean, Int64(report.firstDoneS * 1e9), Int64(report.lastDoneS * 1e9),
                    report.cleanup.map { Int64($0.ops) }, cleanupDuration.map { Int64($0) }, report.cleanup?.opsPerS,
                    report.validity?.verdict.rawValue, report.runID])
            for (index, agent, done) in agentRows {
                try db.execute(sql: """
                    UPDATE runAgent SET status = ?, message = ?, runDirectory = ?, ops = ?, bytes = ?, errors = ?,
                        durationNanos = ?, opsPerSecond = ?, p50Micros = ?, p99Micros = ?, maxMicros = ?,
                        firstDoneNanos = ?, lastDoneNanos = ?
                    WHERE runID = ? AND agentIndex = ?
                    """, arguments: [
                        agent.status.rawValue, agent.message, agent.runDirectory, Int64(agent.ops), Int64(agent.bytes),
                        Int64(agent.errors), Int64(agent.durationS * 1e9), agent.opsPerS, agent.latencyUs.p50,
                        agent.latencyUs.p99, agent.latencyUs.max, done.map { Int64($0.firstDoneNanos) },
                        done.map { Int64($0.lastDoneNanos) }, report.runID, index])
            }
            for (index, done) in dones {
                try PhaseDoneRecord(runID: report.runID, agentIndex: index, done: done).insert(db, onConflict: .replace)
            }
        }
    }

    /// Records a set that is starting (`--runs`, a `--find-max` search): its kind and what it asks for.
    public func insertSet(_ set: RunSetRecord) async throws(LoadgenError) {
        try await self.asyncWrite { db in try set.insert(db) }
    }

    /// Records a set's result (the search's capacity, the set's medians) as JSON, when it ends.
    public func finishSet(id: String, result: String, endedAtWallNanos: UInt64) async throws(LoadgenError) {
        try await self.asyncWrite { db in
            try db.execute(sql: "UPDATE runSet SET result = ?, endedAtNanos = ? WHERE id = ?",
                           arguments: [result, Int64(endedAtWallNanos), id])
        }
    }

    /// Marks as `aborted` every run left `running` whose coordinator is gone (killed, crashed, powered off),
    /// keeping and summarizing what it had stored. A run whose coordinator is still alive is left alone; one whose
    /// coordinator ran on another host counts as gone once it has written nothing for `staleAfterNanos`.
    /// Returns the runs marked, with the directories their write runs may have left.
    @discardableResult
    public func markAbandonedRuns(seenFrom here: ProcessIdentity, nowWallNanos: UInt64,
                                  staleAfterNanos: UInt64 = 300_000_000_000) throws(LoadgenError) -> [AbandonedRun] {
        let running: [(String, ProcessIdentity, UInt64)] = try self.read { db in
            try Row.fetchAll(db, sql: """
                SELECT id, coordinatorHost, coordinatorPid, coordinatorStartTicks, bootID, lastSeenAtNanos
                FROM run WHERE status = 'running'
                """).map { row in
                (row["id"], ProcessIdentity(host: row["coordinatorHost"], pid: Int32(row["coordinatorPid"] as Int64),
                                            startTicks: row["coordinatorStartTicks"], bootID: row["bootID"]),
                 UInt64(row["lastSeenAtNanos"] as Int64))
            }
        }
        var marked: [AbandonedRun] = []
        for (id, identity, lastSeen) in running {
            let alive = identity.isAlive(seenFrom: here) ?? (nowWallNanos &- lastSeen < staleAfterNanos)
            if alive { continue }
            guard var aggregate = try self.loadAggregate(runID: id) else { continue }
            for index in aggregate.agents.indices where aggregate.agents[index].status == .running {
                aggregate.agents[index].status = .aborted
                aggregate.agents[index].message = "The coordinator stopped before the run ended."
            }
            let report = RunReport(aggregate: aggregate, startedAtWallNanos: try self.startedAtNanos(id),
                                   endedAtWallNanos: lastSeen, loadgenVersion: "",
                                   message: "The coordinator stopped (killed, crashed or powered off) before the run ended; what it had received is kept.")
            var stored = report
            stored.loadgenVersion = try self.read { db in try String.fetchOne(db, sql: "SELECT loadgenVersion FROM run WHERE id = ?", arguments: [id]) ?? "" }
            let final = stored
            try self.write { db in
                // Only if still running: another process may have settled it meanwhile.
                guard try String.fetchOne(db, sql: "SELECT status FROM run WHERE id = ?", arguments: [id]) == "running" else { return }
                let l = final.latencyUs
                try db.execute(sql: """
                    UPDATE run SET status = 'aborted', message = ?, endedAt = ?, endedAtNanos = ?, durationNanos = ?,
                        ops = ?, bytes = ?, errors = ?, opsPerSecond = ?, mibPerSecond = ?, p50Micros = ?, p90Micros = ?,
                        p99Micros = ?, p999Micros = ?, maxMicros = ?, meanMicros = ?
                    WHERE id = ?
                    """, arguments: [final.message, final.endedAt, Int64(lastSeen), Int64(final.durationS * 1e9),
                                     Int64(final.ops), Int64(final.bytes), Int64(final.errors), final.opsPerS,
                                     final.mibPerS, l.p50, l.p90, l.p99, l.p999, l.max, l.mean, id])
                try db.execute(sql: """
                    UPDATE runAgent SET status = 'aborted', message = 'The coordinator stopped before the run ended.'
                    WHERE runID = ? AND status = 'running'
                    """, arguments: [id])
            }
            marked.append(try self.abandoned(id, agents: aggregate.agents))
        }
        return marked
    }

    /// What a run marked aborted may have left on its agents' disks.
    private func abandoned(_ id: String, agents: [RunAggregate.AgentState]) throws(LoadgenError) -> AbandonedRun {
        let requestJSON: String? = try self.read { db in try String.fetchOne(db, sql: "SELECT request FROM run WHERE id = ?", arguments: [id]) }
        let request = requestJSON.flatMap { try? FrameCodec.makeDecoder().decode(RunRequest.self, from: Data($0.utf8)) }
        guard let write = request?.write else { return AbandonedRun(runID: id, target: nil, keep: false, directories: []) }
        let base = write.target.hasSuffix("/") && write.target.count > 1 ? String(write.target.dropLast()) : write.target
        let directories = agents.map { agent in
            AbandonedRun.Directory(agentID: agent.agentID, address: agent.address,
                                   path: (base == "/" ? "" : base) + "/" + write.runDirectoryName(runID: id, agentID: agent.agentID))
        }
        return AbandonedRun(runID: id, target: write.target, keep: write.keep, directories: directories)
    }

    private func startedAtNanos(_ id: String) throws(LoadgenError) -> UInt64 {
        try self.read { db in UInt64(try Int64.fetchOne(db, sql: "SELECT startedAtNanos FROM run WHERE id = ?", arguments: [id]) ?? 0) }
    }

    func asyncWrite(_ body: @escaping @Sendable (Database) throws -> Void) async throws(LoadgenError) {
        do {
            try await self.writer.write(body)
        } catch {
            // The store opened, and runs may already have happened: whatever fails now is the store's failure, not
            // a refusal of the request.
            let described = self.described(error)
            guard described.code != .store, let error = error as? DatabaseError else { throw described }
            throw LoadgenError(.store, "The run store '\(self.writer.path)' failed: \(error.message ?? "\(error.resultCode)").")
        }
    }
}
