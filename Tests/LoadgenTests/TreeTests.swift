import Foundation
import Testing
@testable import LoadgenCore
@testable import LoadgenWorkloads

/// `--tree DEPTH:FANOUT`: the tree's shape, the files spread evenly over its leaves, the timed mkdir phase in every
/// mode, the tree gone with the remove phase, and the refusals.
@Suite(.timeLimit(.minutes(2)))
struct TreeTests {
    /// Every directory of the tree, as relative paths, walked on disk.
    static func directories(under path: String) -> Set<String> {
        guard let e = FileManager.default.enumerator(atPath: path) else { return [] }
        var out: Set<String> = []
        while let item = e.nextObject() as? String {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: path + "/" + item, isDirectory: &isDir), isDir.boolValue { out.insert(item) }
        }
        return out
    }

    @Test func theShapesArithmeticAndPreorder() throws {
        let tree = TreeShape(depth: 3, fanout: 3)
        #expect(tree.leaves == 27 && tree.subtreeNodes == 13 && tree.nodes == 39)
        #expect(tree.nodePath(0) == "d000000")
        #expect(tree.nodePath(1) == "d000000/d000000")
        #expect(tree.nodePath(2) == "d000000/d000000/d000000")
        #expect(tree.nodePath(4) == "d000000/d000000/d000002")
        #expect(tree.nodePath(5) == "d000000/d000001")
        #expect(tree.nodePath(13) == "d000001")
        #expect(tree.nodePath(38) == "d000002/d000002/d000002")
        // Every directory once, each after its parent: preorder.
        let paths = (0..<tree.nodes).map(tree.nodePath)
        #expect(Set(paths).count == tree.nodes)
        for (i, path) in paths.enumerated() {
            if let slash = path.lastIndex(of: "/") {
                let parent = String(path[..<slash])
                #expect(paths.firstIndex(of: parent).map { $0 < i } == true, "\(path)")
            }
        }
        #expect(paths.filter { $0.split(separator: "/").count == 3 }.count == 27)
        // A chain (fanout 1) and a single level (the same names as --dirs).
        #expect((0..<3).map(TreeShape(depth: 3, fanout: 1).nodePath) == ["d000000", "d000000/d000000", "d000000/d000000/d000000"])
        let flat = FileNamer(seed: 5, size: SizeRange(exactly: 1), dirs: 1, tree: TreeShape(depth: 1, fanout: 7))
        let dirs = FileNamer(seed: 5, size: SizeRange(exactly: 1), dirs: 7)
        #expect((0..<20).allSatisfy { flat.path(of: UInt64($0)) == dirs.path(of: UInt64($0)) })
        // The deepest tree's paths fit the path buffer.
        let deep = FileNamer(seed: 5, size: SizeRange(exactly: 1), dirs: 1, tree: TreeShape(depth: TreeShape.maxDepth, fanout: 2))
        #expect(deep.path(of: 255).utf8.count + 1 <= FileNamer.bufferBytes)
        #expect(deep.path(of: 255).hasPrefix(String(repeating: "d000001/", count: 8)))
    }

    /// Workers split the top-level subtrees: every directory in exactly one share, whole subtrees each.
    @Test(arguments: [1, 2, 3, 5])
    func theMkdirSharesCoverTheTreeOnce(workers: Int) throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let spec = WriteSpec(target: root, files: 100, tree: TreeShape(depth: 2, fanout: 4))
        let directory = try RunDirectory.create(target: root, allowedRoots: nil, name: "t", subdirectories: 0)
        let engine = WriteEngine(spec: spec, directory: directory, seed: 1, workers: workers)
        var covered: [UInt64] = []
        for worker in 0..<workers {
            let share = engine.share(phase: .mkdir, worker: worker, of: workers)
            #expect(share.first % 5 == 0 && (share.count ?? 0) % 5 == 0, "whole subtrees of 5")
            covered += Array(share.first..<(share.first + (share.count ?? 0)))
        }
        #expect(covered == Array(0..<20))
        _ = directory.discard()
    }

    /// Every mode: mkdir makes the tree (ops = directories), create spreads the files evenly over the leaves,
    /// stat and read find them there, and remove leaves nothing.
    @Test(arguments: ExecutionMode.allCases)
    func everyModeMakesTheTreeFillsItAndRemovesIt(mode: ExecutionMode) async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let tree = TreeShape(depth: 2, fanout: 3)
        let spec = WriteSpec(target: root, files: 50, size: SizeRange(lowerBytes: 0, upperBytes: 5000), stat: true, read: true,
                             verify: true, tree: tree)
        let request = RunRequest(runID: "t-\(mode.rawValue)", write: spec, mode: mode, workers: mode == .sequential ? 1 : 2, seed: 4)
        try request.validate()
        #expect(spec.phases == [.mkdir, .main, .stat, .read, .cleanup])
        let dir = root + "/" + RunDirectory.name(runID: request.runID, agentID: "test")
        let seen = Locked<(dirs: Set<String>, perLeaf: [String: Int])>(([], [:]))
        let messages = await RunHarness.perform(request, phases: spec.phases, afterPhase: { phase in
            guard phase == .main else { return }
            var perLeaf: [String: Int] = [:]
            for file in TestSupport.files(under: dir) {
                perLeaf[String(file[..<file.lastIndex(of: "/")!]), default: 0] += 1
            }
            seen.withLock { $0 = (Self.directories(under: dir), perLeaf) }
        })
        let mkdir = try #require(RunHarness.done(messages, .mkdir))
        #expect(mkdir.status == .completed, "\(mkdir.message ?? "")")
        #expect(mkdir.ops == 12 && mkdir.errors == 0)
        #expect(try RunHarness.tally(messages, .mkdir).latency.totalCount == 12)
        for phase in [Phase.main, .stat, .read, .cleanup] {
            let done = try #require(RunHarness.done(messages, phase), "\(phase)")
            #expect(done.status == .completed && done.ops == 50 && done.errors == 0, "\(phase): \(done.message ?? "")")
        }
        let (dirs, perLeaf) = seen.value
        #expect(dirs == Set((0..<tree.nodes).map(tree.nodePath)))
        // 50 files over 9 leaves: five leaves hold 6, four hold 5, and only leaves hold files.
        #expect(perLeaf.count == 9 && perLeaf.keys.allSatisfy { $0.split(separator: "/").count == 2 })
        #expect(perLeaf.values.sorted() == [5, 5, 5, 5, 6, 6, 6, 6, 6])
        #expect(!FileManager.default.fileExists(atPath: dir), "the run directory and its tree are gone")
    }

    /// A kept run keeps the tree; a file in it is where the namer says.
    @Test func aKeptTreeHoldsEachFileWhereTheNamerSays() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let tree = TreeShape(depth: 3, fanout: 2)
        let spec = WriteSpec(target: root, files: 20, size: SizeRange(exactly: 3), keep: true, tree: tree)
        let request = RunRequest(runID: "t-kept", write: spec, mode: .threads, workers: 3, seed: 9)
        let messages = await RunHarness.perform(request, phases: spec.phases)
        #expect(RunHarness.done(messages, .mkdir)?.ops == 14)
        #expect(RunHarness.done(messages)?.ops == 20)
        let dir = root + "/" + RunDirectory.name(runID: request.runID, agentID: "test")
        let namer = FileNamer(seed: FileNamer.agentSeed(runSeed: 9, agentID: "test"), size: spec.size, dirs: 1, tree: tree)
        #expect(Set(TestSupport.files(under: dir)) == Set((0..<20).map { namer.path(of: UInt64($0)) }))
        #expect(namer.path(of: 5).hasPrefix("d000001/d000000/d000001/"), "leaf 5 is 101 in base 2")
    }

    /// Through the binary: the report's phases begin with mkdir, schema-valid, and the summary names the tree.
    @Test func theCommandReportsTheMkdirPhase() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let out = try await TestSupport.run(["coordinate", "--target", dir, "--files", "40", "--tree", "2:2",
                                             "--mode", "threads,processes", "--workers", "2", "--json"],
                                            environment: ["LOADGEN_DB": dir + "/db.sqlite"])
        #expect(out.status == 0, "\(out.stderr)")
        let lines = try CommandLineTests.jsonLines(out.stdout)
        #expect(lines.count == 2)
        let validator = try JSONSchemaValidator(schemaFile: CommandLineTests.reportSchema)
        for line in lines {
            #expect(validator.validate(line) == [])
            let phases = try #require(line["phases"] as? [[String: Any]])
            #expect(phases.map { $0["phase"] as? String } == ["mkdir", "create", "remove"])
            #expect(phases.map { $0["ops"] as? Int } == [6, 40, 40])
            #expect(((line["write"] as? [String: Any])?["tree"] as? [String: Int]) == ["depth": 2, "fanout": 2])
        }
        #expect(out.stderr.contains("2:2 tree"), "\(out.stderr)")
        #expect(TestSupport.files(under: dir).filter { !$0.hasPrefix("db.sqlite") }.isEmpty)
        #expect(Self.directories(under: dir).isEmpty)
    }

    @Test(arguments: [
        (["--tree", "0:3"], "depth 0"),
        (["--tree", "3:0"], "fanout 0"),
        (["--tree", "9:2"], "limit of 8 levels"),
        (["--tree", "three"], "DEPTH:FANOUT"),
        (["--tree", "4:10", "--files", "1000"], "10000 leaf directories, more than the 1000 files"),
        (["--tree", "2:3", "--dirs", "4"], "give one"),
        (["--tree", "2:3", "--dir-per-worker"], "give one"),
        (["--tree", "2:3", "--stonewall", "1s", "--phases", "stat"], "no create phase"),
    ])
    func refusals(arguments: [String], words: String) async throws {
        try await TestSupport.expectWriteRefusal(arguments, words: words)
    }
}
