import Foundation
import Testing
@testable import LoadgenCore
@testable import LoadgenWorkloads

/// `--phases create,stat,read,remove` and `--verify`: every phase exact in every mode, and the faults a file system
/// can show between phases counted by kind.
@Suite(.timeLimit(.minutes(2)))
struct PhasesTests {
    static func spec(_ root: String, files: Int = 150, size: SizeRange = SizeRange(lowerBytes: 0, upperBytes: 70_000),
                     verify: Bool = true, keep: Bool = false) -> WriteSpec {
        WriteSpec(target: root, files: files, size: size, dirs: 3, keep: keep, stat: true, read: true, verify: verify)
    }

    @Test(arguments: ExecutionMode.allCases)
    func everyPhaseIsExactInEveryMode(mode: ExecutionMode) async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let spec = Self.spec(root)
        let request = RunRequest(runID: "p-\(mode.rawValue)", write: spec, mode: mode, workers: mode == .sequential ? 1 : 3, seed: 21)
        try request.validate()
        #expect(spec.phases == [.main, .stat, .read, .cleanup])
        let messages = await RunHarness.perform(request, phases: spec.phases)
        let namer = FileNamer(seed: FileNamer.agentSeed(runSeed: 21, agentID: "test"), size: spec.size, dirs: 3)
        let bytes = (0..<150).reduce(UInt64(0)) { $0 + namer.sizeBytes(of: UInt64($1)) }
        for phase in spec.phases {
            let done = try #require(RunHarness.done(messages, phase), "\(phase)")
            #expect(done.status == .completed, "\(phase): \(done.message ?? "")")
            #expect(done.ops == 150, "\(phase)")
            #expect(done.errors == 0, "\(phase): \(String(describing: (try? RunHarness.tally(messages, phase))?.errorSamples))")
            // stat counts no bytes; read counts every byte it read back.
            #expect(done.bytes == (phase == .stat ? 0 : bytes), "\(phase)")
            let tally = try RunHarness.tally(messages, phase)
            #expect(tally.ops == 150 && tally.latency.totalCount == 150, "\(phase)")
        }
        #expect(TestSupport.files(under: root).isEmpty)
    }

    /// Between create and stat, one file is removed, one cut short, one grown and one overwritten with other bytes
    /// of the same length: stat and read count them by kind, and only --verify sees the overwritten one.
    @Test(arguments: [(ExecutionMode.threads, true), (.async, true), (.threads, false), (.processes, true)])
    func filesChangedBehindTheRunsBackAreCountedByKind(mode: ExecutionMode, verify: Bool) async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let spec = Self.spec(root, files: 40, size: SizeRange(exactly: 100), verify: verify)
        let request = RunRequest(runID: "q-\(mode.rawValue)-\(verify)", write: spec, mode: mode, workers: 2, seed: 3)
        let dir = root + "/" + RunDirectory.name(runID: request.runID, agentID: "test")
        let namer = FileNamer(seed: FileNamer.agentSeed(runSeed: 3, agentID: "test"), size: spec.size, dirs: 3)
        let messages = await RunHarness.perform(request, phases: spec.phases, afterPhase: { phase in
            guard phase == .main else { return }
            unlink(dir + "/" + namer.path(of: 0))
            truncate(dir + "/" + namer.path(of: 1), 50)
            let grown = FileHandle(forWritingAtPath: dir + "/" + namer.path(of: 2))!
            grown.seekToEndOfFile()
            grown.write(Data("more".utf8))
            try? grown.close()
            try? Data(repeating: UInt8(ascii: "~"), count: 100).write(to: URL(fileURLWithPath: dir + "/" + namer.path(of: 3)))
        })
        let stat = try RunHarness.tally(messages, .stat)
        #expect(stat.ops == 37)
        #expect(stat.errors[.noEntry] == 1)
        #expect(stat.errors[.mismatch] == 2, "\(stat.errorSamples)")
        let read = try RunHarness.tally(messages, .read)
        #expect(read.ops == (verify ? 36 : 37))
        #expect(read.errors[.noEntry] == 1)
        #expect(read.errors[.mismatch] == (verify ? 3 : 2), "\(read.errorSamples)")
        #expect(read.errorSamples[.mismatch] != nil)
        // Remove takes what is there; the missing file was never there to remove.
        #expect(RunHarness.done(messages, .cleanup)?.ops == 39)
    }

    /// IO500's stonewall: every worker stops creating at the stonewall, and stat, read and remove act on exactly the
    /// files each made (the whole share of a million is never reached).
    @Test(arguments: [(ExecutionMode.threads, 20), (.threads, 120), (.sequential, 60), (.processes, 60), (.async, 60)])
    func theStonewallStopsCreateAndTheLaterPhasesTakeWhatWasMade(mode: ExecutionMode, milliseconds: Int) async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        var spec = Self.spec(root, files: 1_000_000, size: SizeRange(exactly: 0), verify: false)
        spec.stonewallNanos = UInt64(milliseconds) * 1_000_000
        let request = RunRequest(runID: "s-\(mode.rawValue)-\(milliseconds)", write: spec, mode: mode, workers: mode == .sequential ? 1 : 2, seed: 4)
        try request.validate()
        let messages = await RunHarness.perform(request, phases: spec.phases)
        let create = try #require(RunHarness.done(messages, .main))
        #expect(create.ops > 0 && create.ops < 1_000_000)
        #expect(create.errors == 0)
        let seconds = Double(create.durationNanos) / 1e9
        #expect(seconds >= Double(milliseconds) / 1000 && seconds < Double(milliseconds) / 1000 + 0.5, "create took \(seconds)s")
        for phase in [Phase.stat, .read, .cleanup] {
            let done = try #require(RunHarness.done(messages, phase))
            #expect(done.ops == create.ops, "\(phase)")
            #expect(done.errors == 0, "\(phase): \(String(describing: (try? RunHarness.tally(messages, phase))?.errorSamples))")
        }
        #expect(TestSupport.files(under: root).isEmpty)
    }

    @Test func theKeptFilesStayWithoutARemovePhase() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let spec = Self.spec(root, files: 30, size: SizeRange(exactly: 10), keep: true)
        #expect(spec.phases == [.main, .stat, .read])
        let request = RunRequest(runID: "k", write: spec, mode: .threads, workers: 2, seed: 1)
        let messages = await RunHarness.perform(request, phases: spec.phases)
        #expect(RunHarness.done(messages, .read)?.ops == 30)
        #expect(TestSupport.files(under: root).count == 30)
    }

    /// `--dir-per-worker`: each worker's contiguous share in its own directory, in every mode.
    @Test(arguments: [ExecutionMode.threads, .processes, .async])
    func eachWorkerHasADirectoryOfItsOwn(mode: ExecutionMode) async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let spec = WriteSpec(target: root, files: 103, size: SizeRange(exactly: 1), keep: true, dirPerWorker: true)
        let request = RunRequest(runID: "w-\(mode.rawValue)", write: spec, mode: mode, workers: 4, seed: 8)
        try request.validate()
        let messages = await RunHarness.perform(request, phases: spec.phases)
        #expect(RunHarness.done(messages)?.ops == 103)
        let dir = root + "/" + RunDirectory.name(runID: request.runID, agentID: "test")
        let namer = FileNamer(seed: FileNamer.agentSeed(runSeed: 8, agentID: "test"), size: spec.size, dirs: 4, blockFiles: 103)
        for worker in 0..<4 {
            let share = FileNamer.share(of: 103, workers: 4, worker: worker)
            let names = Set(try FileManager.default.contentsOfDirectory(atPath: dir + "/" + FileNamer.directoryName(worker)))
            #expect(names.count == Int(share.count), "worker \(worker)")
            for index in share.first..<(share.first + share.count) {
                #expect(namer.path(of: index).hasPrefix(FileNamer.directoryName(worker) + "/"))
                #expect(names.contains(String(namer.path(of: index).dropFirst(8))))
            }
        }
    }

    /// The presets follow IO500's phase_mdtest_easy.c and phase_mdtest_hard.c.
    @Test func thePresetsAreIO500sShapes() throws {
        let easy = WritePreset.mdtestEasy.parameters(workers: 3)
        #expect(easy == WritePreset.Parameters(files: 3_000_000, size: SizeRange(exactly: 0), dirPerWorker: true, stat: true,
                                               read: false, stonewallNanos: 300_000_000_000, fsync: .none))
        let hard = WritePreset.mdtestHard.parameters(workers: 2)
        #expect(hard == WritePreset.Parameters(files: 2_000_000, size: SizeRange(exactly: 3901), dirPerWorker: false, stat: true,
                                               read: true, stonewallNanos: 300_000_000_000, fsync: .end))
        #expect(throws: LoadgenError.self) { try WritePreset.parse("io500") }
    }

    /// Through the binary: a preset names itself in the report, and a flag given beside it wins.
    @Test func aPresetIsReportedAndFlagsOverrideIt() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let out = try await TestSupport.run(["coordinate", "--target", dir, "--preset", "mdtest-hard", "--files", "300",
                                             "--stonewall", "20s", "--mode", "threads", "--workers", "2", "--json"],
                                            environment: ["LOADGEN_DB": dir + "/db.sqlite"])
        #expect(out.status == 0, "\(out.stderr)")
        let line = try #require(try CommandLineTests.jsonLines(out.stdout).first)
        #expect(try JSONSchemaValidator(schemaFile: CommandLineTests.reportSchema).validate(line) == [])
        let write = try #require(line["write"] as? [String: Any])
        #expect(write["preset"] as? String == "mdtest-hard")
        #expect(write["files"] as? Int == 300, "--files wins")
        #expect(write["stonewall_nanos"] as? Int == 20_000_000_000, "--stonewall wins")
        #expect((write["size"] as? [String: Int])?["lower_bytes"] == 3901)
        #expect(write["fsync"] as? String == "end")
        #expect((line["phases"] as? [[String: Any]])?.map { $0["phase"] as? String } == ["create", "stat", "read", "remove"])
        #expect((line["phases"] as? [[String: Any]])?.map { $0["ops"] as? Int } == [300, 300, 300, 300])
        #expect(out.stderr.contains("mdtest-hard"))
    }

    @Test func phaseListsParseInOrderAndRefuseTheRest() throws {
        #expect(try WriteSpec.parsePhases("create,remove") == (false, false, true))
        #expect(try WriteSpec.parsePhases(" create , stat,read ") == (true, true, false))
        for (bad, words) in [("stat,read", "no create phase"), ("create,read,stat", "out of order"), ("create,create", "twice"),
                             ("create,list", "'list'"), ("", "''")] {
            #expect(throws: LoadgenError.self, "\(bad)") { try WriteSpec.parsePhases(bad) }
            do { _ = try WriteSpec.parsePhases(bad) } catch { #expect(error.message.contains(words), "\(bad): \(error.message)") }
        }
    }

    /// Through the binary: the report's phases array (schema-valid), the summary, the store and history show.
    @Test func theCommandReportsEachPhaseAndHistoryShowsThem() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let db = dir + "/db.sqlite"
        let out = try await TestSupport.run(["coordinate", "--target", dir, "--files", "200", "--size", "1-4k",
                                             "--phases", "create,stat,read,remove", "--verify", "--mode", "threads,async",
                                             "--workers", "2", "--json"], environment: ["LOADGEN_DB": db])
        #expect(out.status == 0, "\(out.stderr)")
        let lines = try CommandLineTests.jsonLines(out.stdout)
        #expect(lines.count == 2)
        let validator = try JSONSchemaValidator(schemaFile: CommandLineTests.reportSchema)
        for line in lines {
            #expect(validator.validate(line) == [])
            let phases = try #require(line["phases"] as? [[String: Any]])
            #expect(phases.map { $0["phase"] as? String } == ["create", "stat", "read", "remove"])
            #expect(phases.map { $0["ops"] as? Int } == [200, 200, 200, 200])
            #expect(phases[2]["bytes"] as? Int == phases[0]["bytes"] as? Int)
            #expect(phases.allSatisfy { ($0["last_done_s"] as? Double ?? -1) >= ($0["first_done_s"] as? Double ?? 0) })
        }
        #expect(out.stderr.contains("stat'ed in") && out.stderr.contains("read in"), "\(out.stderr)")
        let show = try await TestSupport.run(["history", "show", lines[0]["run_id"] as! String, "--json"], environment: ["LOADGEN_DB": db])
        #expect(show.status == 0, "\(show.stderr)")
        let shown = try #require(try CommandLineTests.jsonLines(show.stdout).first)
        #expect((shown["phases"] as? [[String: Any]])?.map { $0["ops"] as? Int } == [200, 200, 200, 200])
        let compare = try await TestSupport.run(["history", "compare", lines[0]["run_id"] as! String, lines[1]["run_id"] as! String],
                                                environment: ["LOADGEN_DB": db])
        #expect(compare.stdout.contains("stat files/s") && compare.stdout.contains("read p99 us"), "\(compare.stdout)")
    }

    @Test(arguments: [
        (["--phases", "stat,read"], "no create phase"),
        (["--phases", "create,remove", "--keep"], "give one or the other"),
        (["--verify"], "--verify checks what the read phase reads"),
        (["--phases", "create,stats"], "'stats'"),
        (["--stonewall", "0s"], "--stonewall"),
        (["--stonewall", "soon"], "soon"),
        (["--dirs", "4", "--dir-per-worker"], "give one"),
        (["--preset", "io500"], "'io500'"),
    ])
    func refusals(arguments: [String], words: String) async throws {
        try await TestSupport.expectWriteRefusal(arguments, words: words)
    }
}
