import Foundation
import GRDB
import Testing
@testable import LoadgenCore
@testable import LoadgenStore

/// The run store on in-memory databases (Given / When / Then), and its contract with `schemas/sql`.
struct StoreTests {
    static let here = ProcessIdentity(host: "test-host", pid: getpid(), startTicks: ProcessIdentity.startTicks(of: getpid()) ?? 0,
                                      bootID: ProcessIdentity.currentBootID())

    static func request(_ id: String, label: String? = "lab", mode: ExecutionMode = .threads, files: Int = 100) -> RunRequest {
        RunRequest(runID: id, label: label, write: WriteSpec(target: "/tmp", files: files), mode: mode, workers: 2, seed: 1)
    }

    static func agents(_ count: Int = 1) -> [AgentRecord] {
        (0..<count).map { AgentRecord(index: $0, agentID: "agent\($0)", host: "h\($0)", address: "embedded", cores: 2,
                                      loadgenVersion: "test", rttNanos: 1000, clockOffsetNanos: -5) }
    }

    static func interval(_ runID: String, seq: Int, ops: UInt64, latencies: [UInt64], phase: Phase = .main) -> WireMessage.Interval {
        var tally = Tally()
        tally.ops = ops
        tally.bytes = ops * 2
        for l in latencies { tally.latency.recordLatency(l) }
        return WireMessage.Interval(runID: runID, phase: phase, seq: seq, elapsedNanos: UInt64(seq) * 1_000_000_000, tally: tally)
    }

    /// A finished run: started, two intervals, ended with a report built from them.
    static func storeFinishedRun(_ store: RunStore, id: String, opsPerInterval: UInt64 = 50, label: String? = "lab",
                                 mode: ExecutionMode = .threads) async throws -> RunReport {
        let request = Self.request(id, label: label, mode: mode)
        let started = MonotonicClock.wallNanos()
        try await store.insertRun(request, agents: Self.agents(), coordinator: Self.here, loadgenVersion: "test",
                                  startedAtWallNanos: started)
        var aggregate = RunAggregate(request: request, agents: [.init(agentID: "agent0", host: "h0", address: "embedded", rttNanos: 1000, clockOffsetNanos: -5)])
        var records: [IntervalRecord] = []
        for seq in 1...2 {
            let i = Self.interval(id, seq: seq, ops: opsPerInterval, latencies: Array(repeating: UInt64(seq) * 1000, count: Int(opsPerInterval)))
            try aggregate.apply(agent: 0, interval: i)
            records.append(IntervalRecord(runID: id, agentIndex: 0, interval: i, receivedAtWallNanos: MonotonicClock.wallNanos()))
        }
        try await store.appendIntervals(records, seenAtWallNanos: MonotonicClock.wallNanos())
        aggregate.apply(agent: 0, phaseDone: .init(runID: id, phase: .main, status: .completed, message: nil, ops: opsPerInterval * 2,
                                                   bytes: opsPerInterval * 4, errors: 0, durationNanos: 2_000_000_000,
                                                   firstDoneNanos: 1_900_000_000, lastDoneNanos: 2_000_000_000))
        aggregate.settle()
        let report = RunReport(aggregate: aggregate, startedAtWallNanos: started,
                               endedAtWallNanos: MonotonicClock.wallNanos(), loadgenVersion: "test", message: nil)
        try await store.finishRun(report, aggregate: aggregate)
        return report
    }

    // MARK: - The contract with schemas/sql

    @Test func migrationsAreTheFilesInSchemasSQL() async throws {
        let dir = TestSupport.packageRoot.appendingPathComponent("schemas/sql")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path)
            .filter { $0.hasSuffix(".sql") && $0 != "schema.snapshot.sql" }.sorted()
        #expect(files.map { String($0.dropLast(4)) } == RunStore.migrations.map(\.identifier))
        for (file, migration) in zip(files, RunStore.migrations) {
            let text = try String(contentsOf: dir.appendingPathComponent(file), encoding: .utf8)
            #expect(migration.sql + "\n" == text, "\(file) differs from the migration the code runs")
        }
    }

    @Test func migratedSchemaMatchesTheCommittedSnapshot() async throws {
        let store = try RunStore.inMemory()
        let schema = try await store.reader.read { db in
            try String.fetchAll(db, sql: "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY name")
        }.joined(separator: ";\n\n") + ";\n"
        let snapshot = TestSupport.packageRoot.appendingPathComponent("schemas/sql/schema.snapshot.sql")
        if ProcessInfo.processInfo.environment["LOADGEN_UPDATE_SNAPSHOT"] == "1" {
            try schema.write(to: snapshot, atomically: true, encoding: .utf8)
        }
        #expect(try String(contentsOf: snapshot, encoding: .utf8) == schema,
                "schemas/sql/schema.snapshot.sql is stale: run LOADGEN_UPDATE_SNAPSHOT=1 swift test --filter migratedSchema")
    }

    // MARK: - Writes and reads

    @Test func aFinishedRunIsStoredWithEverything() async throws {
        // Given an empty store
        let store = try RunStore.inMemory()
        // When a run starts, reports two intervals and ends
        let report = try await Self.storeFinishedRun(store, id: "run-a")
        // Then the listing, the report, the intervals and the histogram are all there
        let listed = try store.listRuns(RunFilter())
        #expect(listed.map(\.runID) == ["run-a"])
        #expect(listed[0].status == "completed")
        #expect(listed[0].ops == 100)
        let back = try #require(try store.report(runID: "run-a"))
        #expect(back == report)
        let intervals = try store.intervals(runID: "run-a")
        #expect(intervals.map(\.seq) == [1, 2])
        #expect(intervals.map(\.ops) == [50, 50])
        // Kept once: each interval whole (its protocol-4 body) and the agent's phase_done; no copy of the report,
        // merged histogram or errors.
        let bodies: [Data] = try await store.reader.read { db in try Data.fetchAll(db, sql: "SELECT body FROM intervalReport WHERE runID = 'run-a' ORDER BY seq") }
        let kept = try bodies.map { try WireMessage.Interval(binaryBody: Array($0)) }
        #expect(kept.map(\.seq) == [1, 2])
        #expect(kept.map { $0.latency.totalCount } == [50, 50])
        let copies: [Int] = try await store.reader.read { db in
            [try Int.fetchOne(db, sql: "SELECT count(*) FROM run WHERE report IS NOT NULL") ?? -1,
             try Int.fetchOne(db, sql: "SELECT count(*) FROM runHistogram") ?? -1,
             try Int.fetchOne(db, sql: "SELECT count(*) FROM runError") ?? -1,
             try Int.fetchOne(db, sql: "SELECT count(*) FROM phaseDone WHERE runID = 'run-a'") ?? -1]
        }
        #expect(copies == [0, 0, 0, 1])
        let request: String? = try await store.reader.read { db in try String.fetchOne(db, sql: "SELECT request FROM run WHERE id = 'run-a'") }
        #expect(try FrameCodec.makeDecoder().decode(RunRequest.self, from: Data(try #require(request).utf8)) == Self.request("run-a"))
    }

    @Test func listingFiltersAndOrdersNewestFirst() async throws {
        let store = try RunStore.inMemory()
        _ = try await Self.storeFinishedRun(store, id: "r1", label: "x", mode: .sequential)
        _ = try await Self.storeFinishedRun(store, id: "r2", label: "y", mode: .threads)
        _ = try await Self.storeFinishedRun(store, id: "r3", label: "x", mode: .threads)
        #expect(try store.listRuns(RunFilter()).map(\.runID) == ["r3", "r2", "r1"])
        #expect(try store.listRuns(RunFilter(label: "x")).map(\.runID) == ["r3", "r1"])
        #expect(try store.listRuns(RunFilter(mode: "threads")).map(\.runID) == ["r3", "r2"])
        #expect(try store.listRuns(RunFilter(limit: 1)).map(\.runID) == ["r3"])
        #expect(try store.listRuns(RunFilter(status: "failed")).isEmpty)
        #expect(try store.listRuns(RunFilter(sinceWallNanos: MonotonicClock.wallNanos() + 1_000_000_000)).isEmpty)
    }

    @Test func runIDsResolveByPrefixAndPosition() async throws {
        let store = try RunStore.inMemory()
        _ = try await Self.storeFinishedRun(store, id: "261125-100000-aaaa")
        _ = try await Self.storeFinishedRun(store, id: "261125-100001-bbbb")
        #expect(try store.resolveRunID("261125-100000") == "261125-100000-aaaa")
        #expect(try store.resolveRunID("last") == "261125-100001-bbbb")
        #expect(try store.resolveRunID("last~1") == "261125-100000-aaaa")
        #expect(throws: LoadgenError.self) { try store.resolveRunID("261125") }
        #expect(throws: LoadgenError.self) { try store.resolveRunID("nope") }
        #expect(throws: LoadgenError.self) { try store.resolveRunID("last~5") }
    }

    @Test func aRunWhoseCoordinatorDiedIsMarkedAbortedWithWhatItHad() async throws {
        // Given a run left running by a coordinator that no longer exists
        let store = try RunStore.inMemory()
        let dead = ProcessIdentity(host: Self.here.host, pid: 999_999, startTicks: 1, bootID: Self.here.bootID)
        try await store.insertRun(Self.request("orphan"), agents: Self.agents(), coordinator: dead, loadgenVersion: "test",
                                  startedAtWallNanos: MonotonicClock.wallNanos())
        try await store.appendIntervals([IntervalRecord(runID: "orphan", agentIndex: 0,
                                                        interval: Self.interval("orphan", seq: 1, ops: 30, latencies: Array(repeating: 5000, count: 30)),
                                                        receivedAtWallNanos: MonotonicClock.wallNanos())],
                                        seenAtWallNanos: MonotonicClock.wallNanos())
        // And a run whose coordinator (this process) is alive
        try await store.insertRun(Self.request("alive"), agents: Self.agents(), coordinator: Self.here, loadgenVersion: "test",
                                  startedAtWallNanos: MonotonicClock.wallNanos())
        // When the store settles abandoned runs
        let marked = try store.markAbandonedRuns(seenFrom: Self.here, nowWallNanos: MonotonicClock.wallNanos())
        // Then only the orphan is aborted, and it keeps what it had
        #expect(marked.map(\.runID) == ["orphan"])
        // It names the directory each agent's write run worked in, for `loadgen clean`.
        let request = Self.request("orphan")
        #expect(marked.first?.target == request.write?.target)
        #expect(marked.first?.directories.map(\.path) == Self.agents().map {
            request.write!.target + "/" + RunMarker.directoryName(runID: "orphan", agentID: $0.agentID)
        })
        let runs = Dictionary(uniqueKeysWithValues: try store.listRuns(RunFilter()).map { ($0.runID, $0) })
        #expect(runs["orphan"]?.status == "aborted")
        #expect(runs["orphan"]?.ops == 30)
        #expect(runs["alive"]?.status == "running")
        let report = try #require(try store.report(runID: "orphan"))
        #expect(report.status == .aborted)
        #expect(report.ops == 30)
        #expect(report.message?.contains("coordinator stopped") == true)
    }

    @Test func aRunFromAnotherHostIsAbortedOnlyWhenStale() async throws {
        let store = try RunStore.inMemory()
        let remote = ProcessIdentity(host: "elsewhere", pid: 1, startTicks: 1, bootID: "x")
        let now = MonotonicClock.wallNanos()
        try await store.insertRun(Self.request("remote"), agents: Self.agents(), coordinator: remote, loadgenVersion: "test",
                                  startedAtWallNanos: now)
        #expect(try store.markAbandonedRuns(seenFrom: Self.here, nowWallNanos: now + 1_000_000_000).isEmpty)
        #expect(try store.markAbandonedRuns(seenFrom: Self.here, nowWallNanos: now + 600_000_000_000).map(\.runID) == ["remote"])
    }

    @Test func comparisonArithmeticAndVerdict() {
        var a = RunReport.fixture(runID: "A", opsPerS: 1000, p99: 100)
        var b = RunReport.fixture(runID: "B", opsPerS: 876, p99: 131)
        var c = RunComparison(a: a, b: b)
        #expect(abs(c.throughputChangePct - -12.4) < 1e-9)
        #expect(c.verdict.hasPrefix("B is 12.4% slower in files/s; p99 +31%"))
        #expect(c.figures[0].delta == -124)
        a.opsPerS = 500
        b.opsPerS = 600
        c = RunComparison(a: a, b: b)
        #expect(c.verdict.hasPrefix("B is 20.0% faster in files/s"))
        #expect(c.differences.isEmpty)
    }
}

extension RunReport {
    static func fixture(runID: String, opsPerS: Double, p99: Double) -> RunReport {
        let request = RunRequest(runID: runID, write: WriteSpec(target: "/tmp"), mode: .threads, workers: 2, seed: 1)
        var aggregate = RunAggregate(request: request, agents: [.init(agentID: "a", host: "h", address: "embedded", rttNanos: 0, clockOffsetNanos: 0)])
        aggregate.settle()
        var report = RunReport(aggregate: aggregate, startedAtWallNanos: 0, endedAtWallNanos: 0, loadgenVersion: "t", message: nil)
        report.opsPerS = opsPerS
        report.latencyUs.p99 = p99
        return report
    }
}

/// The store as a file: refusals that leave the file untouched, and durability across processes.
@Suite(.timeLimit(.minutes(2)))
struct StoreFileTests {
    @Test func aFileThatIsNotADatabaseIsRefusedAndLeftUntouched() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let path = dir + "/notes.txt"
        let content = Data("these are my notes, not a database\n".utf8)
        try content.write(to: URL(fileURLWithPath: path))
        #expect(throws: LoadgenError.self) { try RunStore.open(path: path) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == content)
        let out = try await TestSupport.run(["history", "--db", path])
        #expect(out.status == 2)
        #expect(out.stderr.contains(path))
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == content)
    }

    @Test func aCorruptStoreIsRefusedAndLeftUntouched() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let path = dir + "/runs.sqlite"
        do {
            let store = try RunStore.open(path: path)
            _ = try await StoreTests.storeFinishedRun(store, id: "r")
        }
        // Overwrite the first 100 bytes (the header) with garbage.
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        try handle.write(contentsOf: Data(repeating: 0x5A, count: 100))
        try handle.close()
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        let out = try await TestSupport.run(["history", "--db", path])
        #expect(out.status == 2, "\(out.stderr)")
        #expect(out.stderr.contains("not a loadgen run store") || out.stderr.contains("corrupt"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
    }

    @Test func aStoreFromANewerLoadgenIsRefused() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let path = dir + "/runs.sqlite"
        do {
            let store = try RunStore.open(path: path)
            try store.reader.unsafeReentrantRead { _ in }
        }
        let queue = try DatabaseQueue(path: path)
        try await queue.write { db in try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('9999_future')") }
        try queue.close()
        #expect(throws: LoadgenError.self) { try RunStore.open(path: path) }
        let out = try await TestSupport.run(["history", "--db", path])
        #expect(out.status == 2)
        #expect(out.stderr.contains("newer loadgen"))
    }

    @Test func anUnknownRunExitsTwo() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let out = try await TestSupport.run(["history", "show", "no-such-run", "--db", dir + "/runs.sqlite"])
        #expect(out.status == 2)
        #expect(out.stderr.contains("no-such-run"))
    }

    @Test func historyPrintsTableJSONAndCSV() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let env = ["LOADGEN_DB": dir + "/runs.sqlite"]
        let run = try await TestSupport.run(["coordinate", "--target", dir, "--files", "30", "--mode", "sequential,threads",
                                       "--label", "fmt"], environment: env)
        #expect(run.status == 0, "\(run.stderr)")
        let table = try await TestSupport.run(["history"], environment: env)
        #expect(table.status == 0)
        #expect(table.stdout.split(separator: "\n").count == 3)
        #expect(table.stdout.contains("fmt"))
        let json = try await TestSupport.run(["history", "--json"], environment: env)
        let runs = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        #expect(runs.count == 2)
        #expect(runs.map { $0["mode"] as? String } == ["threads", "sequential"])
        #expect(runs.allSatisfy { $0["ops"] as? Int == 30 && $0["label"] as? String == "fmt" })
        let csv = try await TestSupport.run(["history", "--csv", "--mode", "threads"], environment: env)
        let lines = csv.stdout.split(separator: "\n")
        #expect(lines.count == 2)
        #expect(lines[0].hasPrefix("run_id,started_at,label"))
        #expect(lines[1].contains(",threads,"))
        let show = try await TestSupport.run(["history", "show", "last", "--json"], environment: env)
        let shown = try #require(try JSONSerialization.jsonObject(with: Data(show.stdout.utf8)) as? [String: Any])
        #expect(shown["mode"] as? String == "threads")
        let intervals = try #require(shown["intervals"] as? [[String: Any]])
        #expect(intervals.reduce(0) { $0 + (($1["phase"] as? String) == "main" ? ($1["ops"] as? Int ?? 0) : 0) } == 30)
        let compare = try await TestSupport.run(["history", "compare", "last~1", "last"], environment: env)
        #expect(compare.status == 0)
        #expect(compare.stdout.contains("B is"))
        // 30 files a run: p99.9 from 30 samples makes both suspect, so --fail-if-slower cannot judge (exit 2).
        let gate = try await TestSupport.run(["history", "compare", "last", "last", "--fail-if-slower", "0"], environment: env)
        #expect(gate.status == 2)
        #expect(gate.stderr.contains("cannot judge"), "\(gate.stderr)")
    }

    /// What `history show` gives back is the report the coordinator printed, computed again from the intervals and
    /// phase_dones kept: a write run with its cleanup phase, and a fetch run with statuses, redirects, errors and
    /// per-URL figures.
    @Test func historyShowsExactlyTheReportTheCoordinatorPrinted() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let env = ["LOADGEN_DB": dir + "/runs.sqlite"]
        try await TestHTTPServer.with { server in
            let runs = [
                ["coordinate", "--target", dir, "--files", "40", "--mode", "threads,processes", "--json"],
                ["coordinate", "--target", server.url("/"), "--target", server.url("/status/404"),
                 "--target", server.url("/redirect/2"), "--target", "http://127.0.0.1:1/", "--requests", "24",
                 "--mode", "async", "--json"],
            ]
            for arguments in runs {
                let run = try await TestSupport.run(arguments, environment: env)
                #expect(run.status == 0 || run.status == 1, "\(run.stderr)")
                for line in run.stdout.split(separator: "\n") {
                    let printed = try FrameCodec.makeDecoder().decode(RunReport.self, from: Data(line.utf8))
                    let show = try await TestSupport.run(["history", "show", printed.runID, "--json"], environment: env)
                    #expect(show.status == 0, "\(show.stderr)")
                    let shown = try FrameCodec.makeDecoder().decode(RunReport.self, from: Data(show.stdout.utf8))
                    #expect(shown == printed, "\(printed.runID): \(printed.mode)")
                }
            }
        }
    }

    /// A store written before migration 0002 keeps its runs: they are read from the report they kept.
    @Test func runsStoredBeforeTheCanonicalFormAreStillRead() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let path = dir + "/old.sqlite"
        let report = try await StoreTests.storeFinishedRun(try RunStore.inMemory(), id: "old-run")
        let queue = try DatabaseQueue(path: path)
        try await queue.write { db in
            try db.execute(sql: RunStore.migrations[0].sql)
            try db.execute(sql: "CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY)")
            try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('0001_initial')")
            try db.execute(sql: """
                INSERT INTO run (id, workload, mode, workers, status, target, request, agentCount, loadgenVersion,
                                 coordinatorHost, coordinatorPid, coordinatorStartTicks, bootID, startedAt, startedAtNanos,
                                 lastSeenAtNanos, ops, report)
                VALUES ('old-run', 'write', 'threads', 2, 'completed', '/tmp', ?, 1, 'old', 'h', 1, 1, 'b', ?, 1, 1, 100, ?)
                """, arguments: [String(decoding: try FrameCodec.makeEncoder().encode(StoreTests.request("old-run")), as: UTF8.self),
                                 report.startedAt, String(decoding: try FrameCodec.makeEncoder().encode(report), as: UTF8.self)])
        }
        try queue.close()
        let store = try RunStore.open(path: path)
        #expect(try store.report(runID: "old-run") == report)
        #expect(try store.listRuns(RunFilter()).map(\.runID) == ["old-run"])
    }

    @Test func failIfSlowerExitsOneWhenBIsSlower() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let path = dir + "/runs.sqlite"
        do {
            let store = try RunStore.open(path: path)
            // Enough operations for every percentile: a run with few samples is suspect, and compare will not judge it.
            _ = try await StoreTests.storeFinishedRun(store, id: "fast", opsPerInterval: 1000)
            _ = try await StoreTests.storeFinishedRun(store, id: "slow", opsPerInterval: 500)
        }
        let out = try await TestSupport.run(["history", "compare", "fast", "slow", "--fail-if-slower", "10", "--db", path])
        #expect(out.status == 1, "\(out.stdout) \(out.stderr)")
        #expect(out.stdout.contains("50.0% slower"))
        let ok = try await TestSupport.run(["history", "compare", "slow", "fast", "--fail-if-slower", "10", "--db", path])
        #expect(ok.status == 0)
    }

    /// A coordinator killed mid-run (SIGKILL): the next command finds the run aborted with what it had stored, and
    /// the database intact.
    @Test func aKilledCoordinatorLeavesAnAbortedRunAndAnIntactStore() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let path = dir + "/runs.sqlite"
        let target = dir + "/t"
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestSupport.binary)
        // Bounded: at most 2,000,000 empty files, and killed long before.
        process.arguments = ["coordinate", "--target", target, "--files", "2000000", "--size", "0", "--mode", "sequential",
                             "--interval", "200ms", "--db", path, "--keep"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        // Wait until intervals are being stored, then kill without warning.
        let deadline = Date().addingTimeInterval(20)
        var stored = 0
        while Date() < deadline, stored < 2 {
            try await Task.sleep(for: .milliseconds(100))
            if let queue = try? DatabaseQueue(path: path, configuration: { var c = Configuration(); c.readonly = true; c.busyMode = .timeout(5); return c }()) {
                stored = (try? await queue.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM intervalReport") ?? 0 }) ?? 0
                try? queue.close()
            }
        }
        #expect(stored >= 2, "the run never stored its intervals")
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()

        let out = try await TestSupport.run(["history", "--json", "--db", path])
        #expect(out.status == 0, "\(out.stderr)")
        let runs = try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]])
        #expect(runs.count == 1)
        #expect(runs.first?["status"] as? String == "aborted")
        #expect((runs.first?["ops"] as? Int ?? 0) > 0)
        let store = try RunStore.open(path: path)
        #expect(try store.integrityCheck() == ["ok"])
        let fk: [Row] = try store.reader.read { db in try Row.fetchAll(db, sql: "PRAGMA foreign_key_check") }
        #expect(fk.isEmpty)
    }
}
