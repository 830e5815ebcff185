import Foundation
import Testing
@testable import LoadgenCore
@testable import LoadgenWorkloads

/// Writes through io_uring: exact files at several depths, errors by kind, and the refusal when it is unavailable.
@Suite(.timeLimit(.minutes(2)))
struct AsyncWriteTests {
    @Test(arguments: [1, 8, 64])
    func createsExactlyTheFilesAskedForAtEveryDepth(depth: Int) async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let spec = WriteSpec(target: root, files: 300, size: SizeRange(lowerBytes: 0, upperBytes: 3000), dirs: 3, keep: true)
        let request = RunRequest(runID: "u\(depth)", write: spec, mode: .async, workers: depth, seed: 21)
        let messages = await RunHarness.perform(request, phases: [.main])
        let done = try #require(RunHarness.done(messages), "\(messages)")
        #expect(done.status == .completed)
        #expect(done.ops == 300)
        let tally = try RunHarness.tally(messages)
        #expect(tally.latency.totalCount == 300)
        let dir = root + "/" + RunDirectory.name(runID: request.runID, agentID: "test")
        #expect(TestSupport.files(under: dir).count == 300)
        let namer = FileNamer(seed: FileNamer.agentSeed(runSeed: 21, agentID: "test"), size: spec.size, dirs: 3)
        var bytes: UInt64 = 0
        for index in 0..<300 {
            let size = namer.sizeBytes(of: UInt64(index))
            bytes += size
            #expect(TestSupport.fileSize(dir + "/" + namer.path(of: UInt64(index))) == size, "file \(index)")
        }
        #expect(done.bytes == bytes)
    }

    /// Files larger than the content buffer (1 MiB) take several linked writes; cleanup goes through the ring too.
    @Test func largeFilesAndCleanupThroughTheRing() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let spec = WriteSpec(target: root, files: 5, size: SizeRange(exactly: 3 << 19), keep: false)
        let messages = await RunHarness.perform(RunRequest(runID: "uc", write: spec, mode: .async, workers: 4, seed: 2),
                                                phases: [.main, .cleanup])
        #expect(RunHarness.done(messages, .main)?.ops == 5)
        #expect(RunHarness.done(messages, .main)?.bytes == 5 * (3 << 19))
        #expect(RunHarness.done(messages, .cleanup)?.ops == 5)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty)
    }

    @Test func anAgentWithoutTheRingRefusesBeforeMakingAnything() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let request = RunRequest(runID: "nr", write: WriteSpec(target: root, files: 5), mode: .async, workers: 4, seed: 1)
        let controller = RunController(request: request, context: RunContext(
            agentID: "test", allowedRoots: nil, workerExecutable: TestSupport.binary, ioUringDisabled: "switched off by the test."))
        let emitted = Locked<[WireMessage]>([])
        let (commands, continuation) = AsyncStream.makeStream(of: RunCommand.self)
        continuation.finish()
        await controller.run(commands: commands) { m in emitted.withLock { $0.append(m) } }
        guard case .refused(let refused)? = emitted.value.first else {
            Issue.record("not refused: \(emitted.value)")
            return
        }
        #expect(refused.code == .unsupported)
        #expect(refused.message.contains("io_uring"))
        #expect(refused.message.contains("switched off by the test"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty)
    }

    @Test func theCommandRefusesAsyncWithoutTheRingButAllSkipsIt() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let env = ["LOADGEN_DB": root + "/db.sqlite", "LOADGEN_NO_IO_URING": "1"]
        let refused = try await TestSupport.run(["coordinate", "--target", root, "--files", "10", "--mode", "async"], environment: env)
        #expect(refused.status == 2, "\(refused.stderr)")
        #expect(refused.stderr.contains("io_uring"))
        let all = try await TestSupport.run(["coordinate", "--target", root, "--files", "10", "--json"], environment: env)
        #expect(all.status == 0, "\(all.stderr)")
        #expect(all.stderr.contains("Skipped the async mode"))
        let modes = try CommandLineTests.jsonLines(all.stdout).map { $0["mode"] as? String }
        #expect(modes == ["sequential", "threads", "processes"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).filter { $0.hasPrefix("loadgen-") }.isEmpty)
    }

    /// Errors by kind through the ring: a full tmpfs (ENOSPC) and one remounted read-only under a prepared run (EROFS).
    @Test(.enabled(if: TestSupport.isRoot, "mounting a tmpfs needs root"))
    func errorsAreCountedByKindAndFilesOnDiskMatch() async throws {
        let mountPoint = try TestSupport.makeTemporaryDirectory("lgring")
        defer { TestSupport.remove(mountPoint) }
        try TestSupport.mount(["-t", "tmpfs", "-o", "size=256k", "tmpfs", mountPoint])
        defer { try? TestSupport.mount(["-u", mountPoint], command: "/bin/umount") }

        let full = RunRequest(runID: "full", write: WriteSpec(target: mountPoint, files: 2000, size: SizeRange(exactly: 4096), keep: true),
                              mode: .async, workers: 32, seed: 3)
        let messages = await RunHarness.perform(full, phases: [.main])
        let done = try #require(RunHarness.done(messages))
        #expect(done.status == .failed)
        let tally = try RunHarness.tally(messages)
        #expect(tally.errors[.noSpace] >= 1, "\(tally.errors.dictionary)")
        let dir = mountPoint + "/" + RunDirectory.name(runID: "full", agentID: "test")
        #expect(UInt64(TestSupport.files(under: dir).count) == done.ops)
        try FileManager.default.removeItem(atPath: dir)

        let readOnly = RunRequest(runID: "ro", write: WriteSpec(target: mountPoint, files: 50, size: SizeRange(exactly: 1), keep: true),
                                  mode: .async, workers: 8, seed: 3)
        let roMessages = await RunHarness.perform(readOnly, phases: [.main], beforeStart: {
            try? TestSupport.mount(["-o", "remount,ro", mountPoint])
        })
        try TestSupport.mount(["-o", "remount,rw", mountPoint])
        let roTally = try RunHarness.tally(roMessages)
        #expect(roTally.errors[.readOnlyFileSystem] >= 1, "\(roTally.errors.dictionary)")
        #expect(RunHarness.done(roMessages)?.ops == 0)
    }
}
