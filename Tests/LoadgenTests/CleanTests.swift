import Foundation
import Testing
@testable import LoadgenAgent
@testable import LoadgenCoordinator
@testable import LoadgenCore
@testable import LoadgenStore
@testable import LoadgenWire
@testable import LoadgenWorkloads

/// `loadgen clean`: what killed runs left goes; a live run, a kept run, a foreign directory, a look-alike without
/// the marker and a symlink all stay.
@Suite(.timeLimit(.minutes(1)))
struct CleanTests {
    /// A target holding one of everything clean must tell apart; `live` is held open (its run's lock) until dropped.
    struct Scene {
        let target: String
        let outside: String
        let killed: String
        let kept: String
        let lookAlike: String
        let foreign: String
        let symlink: String
        var live: RunDirectory?

        init() throws {
            self.target = try TestSupport.makeTemporaryDirectory("lgclean")
            self.outside = try TestSupport.makeTemporaryDirectory("lgclean-outside")
            // A killed run: its directory, marker and files stay, and its lock went with its process.
            let killed = try RunDirectory.create(target: self.target, allowedRoots: nil, name: "loadgen-k1-host", subdirectories: 0,
                                                 marker: RunMarker(runID: "k1", agentID: "host", keep: false))
            self.killed = killed.path
            try Self.write(["d00/a", "d00/b", "d01/c"], bytes: 10, in: killed.path)
            // A kept run (--keep), also over.
            let kept = try RunDirectory.create(target: self.target, allowedRoots: nil, name: "loadgen-k2-host", subdirectories: 0,
                                               marker: RunMarker(runID: "k2", agentID: "host", keep: true))
            self.kept = kept.path
            try Self.write(["x"], bytes: 3, in: kept.path)
            // A live run: this object holds its lock.
            let live = try RunDirectory.create(target: self.target, allowedRoots: nil, name: "loadgen-l1-host", subdirectories: 0,
                                               marker: RunMarker(runID: "l1", agentID: "host", keep: false))
            try Self.write(["y"], bytes: 3, in: live.path)
            self.live = live
            // Named like a run directory, but no marker: not loadgen's.
            self.lookAlike = self.target + "/loadgen-fake-run"
            try Self.write(["precious"], bytes: 5, in: self.lookAlike)
            self.foreign = self.target + "/data"
            try Self.write(["keep-me"], bytes: 5, in: self.foreign)
            // A symlink named like a run directory, to a killed run's directory elsewhere: never followed.
            let elsewhere = try RunDirectory.create(target: self.outside, allowedRoots: nil, name: "loadgen-o1-host", subdirectories: 0,
                                                    marker: RunMarker(runID: "o1", agentID: "host", keep: false))
            try Self.write(["z"], bytes: 2, in: elsewhere.path)
            self.symlink = self.target + "/loadgen-o1-host"
            try FileManager.default.createSymbolicLink(atPath: self.symlink, withDestinationPath: elsewhere.path)
        }

        static func write(_ names: [String], bytes: Int, in directory: String) throws {
            for name in names {
                let path = directory + "/" + name
                try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                        withIntermediateDirectories: true)
                try Data(repeating: 65, count: bytes).write(to: URL(fileURLWithPath: path))
            }
        }

        func exists(_ path: String) -> Bool {
            var info = stat()
            return lstat(path, &info) == 0
        }

        func remove() {
            TestSupport.remove(self.target)
            TestSupport.remove(self.outside)
        }
    }

    @Test func onlyWhatKilledRunsLeftGoesAndADryRunChangesNothing() throws {
        var scene = try Scene()
        defer { scene.remove() }
        let before = TestSupport.files(under: scene.target)

        let dry = try RunCleaner.clean(target: scene.target, allowedRoots: nil, includeKept: false, dryRun: true)
        #expect(dry.removed.map(\.path) == [scene.killed])
        #expect(TestSupport.files(under: scene.target) == before)
        #expect(scene.exists(scene.killed + "/" + RunMarker.fileName))

        let report = try RunCleaner.clean(target: scene.target, allowedRoots: nil, includeKept: false, dryRun: false)
        #expect(report.removed.map(\.path) == [scene.killed])
        #expect(report.removed.first?.runID == "k1")
        #expect(report.files == 3)
        #expect(report.bytes == 30)
        #expect(report.directories == 3, "the run directory and its two subdirectories")
        #expect(report.inUse == [scene.target + "/loadgen-l1-host"])
        #expect(report.kept == [scene.kept])
        #expect(report.unmarked == [scene.lookAlike])
        #expect(report.failures.isEmpty)
        #expect(!scene.exists(scene.killed))
        for survivor in [scene.kept, scene.lookAlike + "/precious", scene.foreign + "/keep-me", scene.symlink,
                         scene.target + "/loadgen-l1-host/y", scene.outside + "/loadgen-o1-host/z"] {
            #expect(scene.exists(survivor), "\(survivor) must survive")
        }

        // --kept takes the kept run too; the live one still stays until its run lets go.
        let withKept = try RunCleaner.clean(target: scene.target, allowedRoots: nil, includeKept: true, dryRun: false)
        #expect(withKept.removed.map(\.path) == [scene.kept])
        #expect(withKept.inUse.count == 1)
        scene.live = nil
        let afterLive = try RunCleaner.clean(target: scene.target, allowedRoots: nil, includeKept: false, dryRun: false)
        #expect(afterLive.removed.map(\.path) == [scene.target + "/loadgen-l1-host"])
        #expect(scene.exists(scene.lookAlike + "/precious"))
        #expect(scene.exists(scene.foreign + "/keep-me"))
    }

    @Test func aTargetThatIsMissingOrOutsideTheRootsIsRefusedNamingIt() throws {
        let scene = try Scene()
        defer { scene.remove() }
        #expect(throws: LoadgenError.self) {
            try RunCleaner.clean(target: scene.target + "/nope", allowedRoots: nil, includeKept: false, dryRun: false)
        }
        do {
            _ = try RunCleaner.clean(target: scene.target, allowedRoots: [scene.outside], includeKept: false, dryRun: false)
            Issue.record("a target outside the roots was cleaned")
        } catch {
            #expect(error.code == .policy)
            #expect(error.message.contains(scene.target))
        }
        #expect(scene.exists(scene.killed))
    }

    /// A run removes its marker with its directory, and a run whose directory holds files it did not make keeps
    /// the marker, so what is left stays loadgen's to clean.
    @Test func aFinishedRunLeavesNoMarkerAndAForeignFileKeepsIt() throws {
        let target = try TestSupport.makeTemporaryDirectory("lgclean")
        defer { TestSupport.remove(target) }
        let plain = try RunDirectory.create(target: target, allowedRoots: nil, name: "loadgen-r1-h", subdirectories: 0,
                                            marker: RunMarker(runID: "r1", agentID: "h", keep: false))
        #expect(plain.removeSelf() == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: target).isEmpty)
        let intruded = try RunDirectory.create(target: target, allowedRoots: nil, name: "loadgen-r2-h", subdirectories: 0,
                                               marker: RunMarker(runID: "r2", agentID: "h", keep: false))
        try Data("x".utf8).write(to: URL(fileURLWithPath: intruded.path + "/stranger"))
        #expect(intruded.removeSelf() != nil)
        var info = stat()
        #expect(lstat(intruded.path + "/" + RunMarker.fileName, &info) == 0)
        #expect(RunCleaner.readMarker(intruded.descriptor)?.runID == "r2")
    }

    @Test func throughTheAgentsWithinTheirRoots() async throws {
        let scene = try Scene()
        defer { scene.remove() }
        try await LiveAgents.with(count: 1, secret: DistributedTests.secret, policy: AgentPolicy(allowedRoots: [scene.target])) { addresses in
            let (dry, inside, outside) = try await RemoteAgentLink.with(addresses: addresses) { links in
                try await CoordinatorSession.with(links: links, configuration: DistributedTests.coordinator()) { session throws(LoadgenError) in
                    _ = try await session.connect()
                    let dry = try await session.clean(.init(target: scene.target, includeKept: false, dryRun: true))
                    let inside = try await session.clean(.init(target: scene.target, includeKept: false, dryRun: false))
                    let outside = try await session.clean(.init(target: scene.outside, includeKept: false, dryRun: false))
                    return (dry, inside, outside)
                }
            }
            #expect(try dry.first?.result.get().removed.map(\.path) == [scene.killed])
            let report = try #require(try inside.first?.result.get())
            #expect(report.removed.map(\.path) == [scene.killed])
            #expect(report.files == 3)
            #expect(report.kept == [scene.kept])
            #expect(report.unmarked == [scene.lookAlike])
            #expect(!scene.exists(scene.killed))
            #expect(scene.exists(scene.kept))
            guard case .failure(let refusal)? = outside.first?.result else {
                Issue.record("a target outside the agent's roots was cleaned")
                return
            }
            #expect(refusal.code == .policy)
            #expect(refusal.message.contains("outside this agent's allowed roots"), "\(refusal.message)")
            #expect(scene.exists(scene.outside + "/loadgen-o1-host/z"))
        }
    }

    @Test func theCommandListsRemovesAndRefuses() async throws {
        let scene = try Scene()
        defer { scene.remove() }
        let dry = try await TestSupport.run(["clean", "--target", scene.target, "--dry-run"], timeout: 20)
        #expect(dry.status == 0, "\(dry.stderr)")
        #expect(dry.stdout.contains("Would remove 1 run directory under"), "\(dry.stdout)")
        #expect(dry.stdout.contains("has no run marker"), "\(dry.stdout)")
        #expect(scene.exists(scene.killed))
        let done = try await TestSupport.run(["clean", "--target", scene.target], timeout: 20)
        #expect(done.status == 0, "\(done.stderr)")
        #expect(done.stdout.contains("Removed 1 run directory under"), "\(done.stdout)")
        #expect(done.stdout.contains("3 directories, 3 files, 30 B"), "\(done.stdout)")
        #expect(done.stdout.contains("kept with --keep"), "\(done.stdout)")
        // This test process holds the live run's lock: another process sees it.
        #expect(done.stdout.contains("loadgen-l1-host  in use by a live run"), "\(done.stdout)")
        #expect(!scene.exists(scene.killed))
        let missing = try await TestSupport.run(["clean", "--target", scene.target + "/nope"], timeout: 20)
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("'\(scene.target)/nope' does not exist"), "\(missing.stderr)")
    }

    /// When the store marks a killed coordinator's run aborted, the user is told which directory it left and the
    /// command that removes it.
    @Test func anAbandonedRunIsNamedWithItsDirectoryAndTheCleanCommand() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let store = try RunStore.open(path: dir + "/db.sqlite")
        let gone = ProcessIdentity(host: "elsewhere", pid: 1, startTicks: 1, bootID: "x")
        let request = RunRequest(runID: "abandoned1", write: WriteSpec(target: dir, files: 10), mode: .threads, workers: 1, seed: 1)
        try await store.insertRun(request, agents: [AgentRecord(index: 0, agentID: "vm", host: "vm", address: "embedded", cores: 2,
                                                                loadgenVersion: "test", rttNanos: 0, clockOffsetNanos: 0)],
                                  coordinator: gone, loadgenVersion: "test",
                                  startedAtWallNanos: MonotonicClock.wallNanos() - 3_600_000_000_000)
        let history = try await TestSupport.run(["history", "--db", dir + "/db.sqlite"], timeout: 20)
        #expect(history.status == 0, "\(history.stderr)")
        #expect(history.stderr.contains("run abandoned1 was left running"), "\(history.stderr)")
        #expect(history.stderr.contains("\(dir)/loadgen-abandoned1-vm"), "\(history.stderr)")
        #expect(history.stderr.contains("`loadgen clean --target \(dir)` removes it"), "\(history.stderr)")
    }
}
