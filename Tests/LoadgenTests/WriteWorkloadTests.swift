import Foundation
import Testing
@testable import LoadgenCore
@testable import LoadgenWorkloads

/// The write workload on temporary directories: every mode creates exactly the files asked for, of the right sizes,
/// and cleanup removes exactly them.
@Suite(.timeLimit(.minutes(2)))
struct WriteWorkloadTests {
    func perform(_ request: RunRequest, phases: [Phase]) async -> [WireMessage] {
        await RunHarness.perform(request, phases: phases)
    }

    static func done(_ messages: [WireMessage], _ phase: Phase) -> WireMessage.PhaseDone? {
        for case .phaseDone(let d) in messages where d.phase == phase { return d }
        return nil
    }

    static func intervals(_ messages: [WireMessage], _ phase: Phase) -> [WireMessage.Interval] {
        messages.compactMap { if case .interval(let i) = $0, i.phase == phase { return i }; return nil }
    }

    @Test(arguments: [ExecutionMode.sequential, .threads, .processes])
    func everyModeCreatesExactlyTheFilesAskedFor(mode: ExecutionMode) async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let spec = WriteSpec(target: root, files: 257, size: SizeRange(lowerBytes: 1, upperBytes: 300), keep: true)
        let request = RunRequest(runID: "t-\(mode.rawValue)", write: spec, mode: mode, workers: 3, seed: 11)
        let messages = await self.perform(request, phases: [.main])
        let done = try #require(Self.done(messages, .main))
        #expect(done.status == .completed)
        #expect(done.ops == 257)
        #expect(done.errors == 0)
        // The intervals sum exactly to the phase's totals.
        let intervals = Self.intervals(messages, .main)
        #expect(intervals.reduce(0) { $0 + $1.ops } == 257)
        #expect(try intervals.reduce(0) { $0 + (try $1.tally().latency.totalCount) } == 257)
        // On disk: exactly those files, each of the size its index says.
        let dir = root + "/" + RunDirectory.name(runID: request.runID, agentID: "test")
        let files = TestSupport.files(under: dir)
        #expect(files.count == 257)
        let namer = FileNamer(seed: FileNamer.agentSeed(runSeed: 11, agentID: "test"), size: spec.size, dirs: 1)
        var expectedBytes: UInt64 = 0
        for index in 0..<257 {
            let name = namer.path(of: UInt64(index))
            let size = namer.sizeBytes(of: UInt64(index))
            expectedBytes += size
            #expect(TestSupport.fileSize(dir + "/" + name) == size, "file \(index)")
        }
        #expect(done.bytes == expectedBytes)
    }

    @Test(arguments: [ExecutionMode.sequential, .threads, .processes])
    func cleanupRemovesExactlyWhatWasCreated(mode: ExecutionMode) async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let spec = WriteSpec(target: root, files: 120, size: SizeRange(exactly: 3), dirs: 4, keep: false)
        let request = RunRequest(runID: "c-\(mode.rawValue)", write: spec, mode: mode, workers: 2, seed: 5)
        let messages = await self.perform(request, phases: [.main, .cleanup])
        #expect(Self.done(messages, .main)?.ops == 120)
        let cleanup = try #require(Self.done(messages, .cleanup))
        #expect(cleanup.status == .completed)
        #expect(cleanup.ops == 120)
        // The run directory and its subdirectories are gone; the target is as it was.
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty)
        guard case .finished(let finished)? = messages.last else {
            Issue.record("the run did not end with finished")
            return
        }
        #expect(finished.message == nil)
    }

    @Test func keptFilesAreSpreadOverSubdirectories() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let spec = WriteSpec(target: root, files: 50, size: SizeRange(exactly: 0), dirs: 5, keep: true)
        let request = RunRequest(runID: "d", write: spec, mode: .threads, workers: 2, seed: 5)
        let messages = await self.perform(request, phases: [.main])
        #expect(Self.done(messages, .main)?.ops == 50)
        let dir = root + "/" + RunDirectory.name(runID: "d", agentID: "test")
        // The subdirectories, and the run's marker link (which `loadgen clean` reads).
        let entries = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(entries == [RunMarker.fileName] + (0..<5).map { FileNamer.directoryName($0) })
        let subdirs = entries.filter { $0 != RunMarker.fileName }
        for sub in subdirs {
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/" + sub).count == 10)
        }
    }

    @Test func aStoppedRunEndsAbortedWithExactCounts() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let spec = WriteSpec(target: root, files: 2000, size: SizeRange(exactly: 1), keep: true)
        let request = RunRequest(runID: "s", write: spec, mode: .threads, workers: 2, seed: 5)
        let controller = RunController(request: request, context: RunContext(agentID: "test", allowedRoots: nil,
                                                                               workerExecutable: TestSupport.binary))
        controller.stop.request("stopped by the test")
        let (commands, continuation) = AsyncStream.makeStream(of: RunCommand.self)
        let emitted = Locked<[WireMessage]>([])
        continuation.yield(.start(.main, atNanos: MonotonicClock.nowNanos()))
        continuation.yield(.finish)
        continuation.finish()
        await controller.run(commands: commands) { m in emitted.withLock { $0.append(m) } }
        // A stop before the start means no phase ran: nothing was created and the empty directory is gone. The
        // start is still answered, aborted and empty, so a coordinator never waits for a phase that will not run.
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty)
        let done = try #require(Self.done(emitted.value, .main))
        #expect(done.status == .aborted)
        #expect(done.ops == 0)
        #expect(done.message == "stopped by the test")
    }

    @Test func refusesATargetThatDoesNotExist() async {
        let spec = WriteSpec(target: "/nonexistent/loadgen-test", files: 1)
        let request = RunRequest(runID: "n", write: spec, mode: .threads, workers: 1, seed: 1)
        let messages = await self.perform(request, phases: [.main])
        guard case .refused(let refused)? = messages.first else {
            Issue.record("not refused: \(messages)")
            return
        }
        #expect(refused.message.contains("/nonexistent/loadgen-test"))
        #expect(refused.code == .usage)
    }

    @Test func refusesTargetsOutsideTheAllowedRoots() throws {
        let root = try TestSupport.makeTemporaryDirectory()
        let other = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root); TestSupport.remove(other) }
        try FileManager.default.createSymbolicLink(atPath: root + "/escape", withDestinationPath: other)
        for target in [other, root + "/../" + URL(fileURLWithPath: other).lastPathComponent, root + "/escape", "/"] {
            #expect(throws: LoadgenError.self, "\(target)") {
                _ = try RunDirectory.create(target: target, allowedRoots: [root], name: "loadgen-x", subdirectories: 1)
            }
        }
        // Nothing was made anywhere.
        #expect(try FileManager.default.contentsOfDirectory(atPath: other).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root) == ["escape"])
        // Inside the root is fine.
        let dir = try RunDirectory.create(target: root, allowedRoots: [root], name: "loadgen-ok", subdirectories: 1)
        #expect(dir.path.hasSuffix("/loadgen-ok"))
    }

    @Test func aRunDirectoryIsNeverReused() throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        _ = try RunDirectory.create(target: root, allowedRoots: nil, name: "loadgen-same", subdirectories: 1)
        #expect(throws: LoadgenError.self) {
            _ = try RunDirectory.create(target: root, allowedRoots: nil, name: "loadgen-same", subdirectories: 1)
        }
    }
}
