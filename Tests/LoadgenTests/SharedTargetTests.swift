import Foundation
import Testing
@testable import LoadgenAgent
@testable import LoadgenCoordinator
@testable import LoadgenCore
@testable import LoadgenWorkloads

/// `--shared-target` and `--shift`: three agents on loopback sharing one target directory (as a shared file system's
/// clients would), every agent's files in one run directory, names apart, the neighbour's files stat'ed and read.
@Suite(.timeLimit(.minutes(2)))
struct SharedTargetTests {
    /// Removes agent `victim`'s files (their names begin with its place in base64) from the shared directory when
    /// the stat phase starts: whoever stats them finds them gone.
    final class Saboteur: RunObserver, @unchecked Sendable {
        let root: String
        let victim: Character
        init(root: String, victim: Int) {
            self.root = root
            self.victim = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")[victim]
        }
        func phaseStarted(_ request: RunRequest, phase: Phase, agents: [ConnectedAgent]) {
            guard phase == .stat else { return }
            for file in TestSupport.files(under: self.root) {
                let name = file.split(separator: "/").last.map(String.init) ?? file
                if name.hasPrefix("AA\(self.victim)") { unlink(self.root + "/" + file) }
            }
        }
        func progress(_ snapshot: ProgressSnapshot) {}
        func agentLost(_ agent: ConnectedAgent, message: String) {}
        func note(_ message: String) {}
    }

    static func run(_ spec: WriteSpec, root: String, mode: ExecutionMode = .threads, workers: Int = 2,
                    observer: any RunObserver = NullObserver()) async throws -> RunOutcome {
        let request = RunRequest(runID: "s-\(UUID().uuidString.prefix(8).lowercased())", write: spec, mode: mode, workers: workers, seed: 12)
        try request.validate()
        return try await LiveAgents.with(count: 3, secret: DistributedTests.secret, policy: AgentPolicy(allowedRoots: [root])) { addresses in
            try await RemoteAgentLink.with(addresses: addresses) { links in
                try await CoordinatorSession.with(links: links, configuration: DistributedTests.coordinator()) { session throws(LoadgenError) in
                    _ = try await session.connect()
                    return try await session.run(request, observer: observer, recorder: nil)
                }
            }
        }
    }

    @Test(arguments: [ExecutionMode.threads, .processes, .async])
    func everyAgentsFilesGoInOneDirectoryUnderNamesOfTheirOwn(mode: ExecutionMode) async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let spec = WriteSpec(target: root, files: 60, size: SizeRange(lowerBytes: 1, upperBytes: 3000), dirs: 2, keep: true,
                             stat: true, read: true, verify: true, sharedToken: WriteSpec.makeSharedToken())
        let outcome = try await Self.run(spec, root: root, mode: mode)
        #expect(outcome.report.status == .completed, "\(outcome.report.message ?? "")")
        #expect(outcome.report.ops == 180)
        for phase in [Phase.stat, .read] {
            #expect(outcome.aggregate.clusterTally(phase).ops == 180, "\(phase)")
            #expect(outcome.aggregate.clusterTally(phase).errors.total == 0, "\(phase)")
        }
        let dirs = try FileManager.default.contentsOfDirectory(atPath: root)
        #expect(dirs == ["loadgen-\(outcome.report.runID)-shared-\(spec.sharedToken!)"])
        let files = TestSupport.files(under: root + "/" + dirs[0])
        #expect(files.count == 180)
        let names = files.map { $0.split(separator: "/").last.map(String.init)! }
        for (i, tag) in ["AAA", "AAB", "AAC"].enumerated() {
            #expect(names.filter { $0.hasPrefix(tag) }.count == 60, "agent \(i)")
        }
        #expect(Set(files.map { String($0.prefix(7)) }) == ["d000000", "d000001"])
    }

    /// Without --keep the last agent out removes the shared directory and its subdirectories.
    @Test func theLastAgentOutRemovesTheSharedDirectory() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let spec = WriteSpec(target: root, files: 80, dirs: 3, sharedToken: WriteSpec.makeSharedToken())
        let outcome = try await Self.run(spec, root: root)
        #expect(outcome.report.status == .completed, "\(outcome.report.message ?? "")")
        #expect(outcome.report.cleanup?.ops == 240)
        #expect(outcome.report.perAgent.allSatisfy { $0.message == nil }, "\(outcome.report.perAgent.map(\.message))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty)
    }

    /// With --shift each agent stats and reads the next agent's files: agent 0's files gone, agent 2 (whose
    /// neighbour is agent 0) finds every one missing, and the others none. Without --shift agent 0 itself does.
    @Test(arguments: [true, false])
    func shiftReadsTheNeighboursFiles(shift: Bool) async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let spec = WriteSpec(target: root, files: 40, size: SizeRange(lowerBytes: 0, upperBytes: 2000), stat: true, read: true,
                             verify: true, sharedToken: WriteSpec.makeSharedToken(), shift: shift)
        let outcome = try await Self.run(spec, root: root, observer: Saboteur(root: root, victim: 0))
        let statErrors = outcome.aggregate.agents.map { $0.errors(.stat) }
        let readOps = outcome.aggregate.agents.map { $0.ops(.read) }
        if shift {
            #expect(statErrors == [0, 0, 40])
            #expect(readOps == [40, 40, 0])
        } else {
            #expect(statErrors == [40, 0, 0])
            #expect(readOps == [0, 40, 40])
        }
        #expect(outcome.aggregate.agents.allSatisfy { $0.errors(.read) == ($0.ops(.read) == 0 ? 40 : 0) })
        #expect(outcome.aggregate.clusterTally(.stat).errors.dictionary == ["ENOENT": 40])
    }

    /// IO500's easy shape on a shared file system: a directory per worker, numbered apart across agents.
    @Test func aDirectoryPerWorkerIsNumberedApartAcrossAgents() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let spec = WriteSpec(target: root, files: 30, keep: true, stat: true, dirPerWorker: true,
                             sharedToken: WriteSpec.makeSharedToken(), shift: true)
        let outcome = try await Self.run(spec, root: root, workers: 2)
        #expect(outcome.report.status == .completed, "\(outcome.report.message ?? "")")
        #expect(outcome.aggregate.clusterTally(.stat).ops == 90)
        let dir = root + "/" + (try FileManager.default.contentsOfDirectory(atPath: root)).first!
        let subdirs = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("d") }.sorted()
        #expect(subdirs == (0..<6).map(FileNamer.directoryName))
        for (number, subdir) in subdirs.enumerated() {
            let names = try FileManager.default.contentsOfDirectory(atPath: dir + "/" + subdir)
            #expect(names.count == 15, "\(subdir)")
            let tag = "AA" + String(Array("ABC")[number / 2])
            #expect(names.allSatisfy { $0.hasPrefix(tag) }, "\(subdir) holds agent \(number / 2)'s files")
        }
    }

    /// A directory of the shared name whose marker names another run is not joined.
    @Test func aSharedDirectoryOfAnotherRunIsNotJoined() throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let first = try RunDirectory.create(target: root, allowedRoots: nil, name: "loadgen-r-shared-0123456789abcdef", subdirectories: 2,
                                            marker: RunMarker(runID: "other", agentID: "a", keep: false), sharedBy: "a")
        #expect(throws: LoadgenError.self) {
            _ = try RunDirectory.create(target: root, allowedRoots: nil, name: "loadgen-r-shared-0123456789abcdef", subdirectories: 0,
                                        marker: RunMarker(runID: "r", agentID: "b", keep: false), sharedBy: "b")
        }
        do {
            _ = try RunDirectory.create(target: root, allowedRoots: nil, name: "loadgen-r-shared-0123456789abcdef", subdirectories: 0,
                                        marker: RunMarker(runID: "r", agentID: "b", keep: false), sharedBy: "b")
        } catch {
            #expect(error.message.contains("is not run r's shared directory"), "\(error.message)")
        }
        // The same run's agent joins it; neither's removal takes the other's files.
        let joined = try RunDirectory.create(target: root, allowedRoots: nil, name: "loadgen-r-shared-0123456789abcdef", subdirectories: 2,
                                             marker: RunMarker(runID: "other", agentID: "c", keep: false), sharedBy: "c")
        #expect(FileManager.default.fileExists(atPath: first.path + "/d000001"))
        _ = FileManager.default.createFile(atPath: joined.path + "/d000000/x", contents: Data("x".utf8))
        #expect(first.removeSubdirectories() == 0, "a subdirectory holding another agent's file is theirs to remove")
        #expect(first.removeSelf() == nil)
        #expect(FileManager.default.fileExists(atPath: joined.path + "/d000000/x"))
        unlink(joined.path + "/d000000/x")
        #expect(joined.removeSubdirectories() == 0)
        #expect(joined.removeSelf() == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty)
    }

    @Test(arguments: [
        (["--shift", "--phases", "create,stat"], "give --shared-target too"),
        (["--shared-target", "--shift"], "give --phases with stat or read"),
        (["--shared-target", "--shift", "--phases", "create,read", "--stonewall", "5s"], "--shift and --stonewall"),
        (["--shared-target", "--tree", "2:2", "--files", "10"], "--tree 2:2 and --shared-target"),
    ])
    func refusals(arguments: [String], words: String) async throws {
        try await TestSupport.expectWriteRefusal(arguments, words: words)
    }

    /// One agent (the embedded one) with a shared target: the run works, and its report says so.
    @Test func theEmbeddedAgentRunsASharedTarget() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let out = try await TestSupport.run(["coordinate", "--target", dir, "--files", "30", "--shared-target", "--shift",
                                             "--phases", "create,stat,read,remove", "--mode", "threads", "--json"],
                                            environment: ["LOADGEN_DB": dir + "/db.sqlite"])
        #expect(out.status == 0, "\(out.stderr)")
        let line = try #require(try CommandLineTests.jsonLines(out.stdout).first)
        #expect(try JSONSchemaValidator(schemaFile: CommandLineTests.reportSchema).validate(line) == [])
        let write = try #require(line["write"] as? [String: Any])
        #expect((write["shared_token"] as? String)?.count == 16)
        #expect(write["shift"] as? Bool == true)
        #expect((line["phases"] as? [[String: Any]])?.map { $0["ops"] as? Int } == [30, 30, 30, 30])
        #expect(out.stderr.contains("one directory for all agents"), "\(out.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).filter { !$0.hasPrefix("db.sqlite") }.isEmpty)
    }
}
