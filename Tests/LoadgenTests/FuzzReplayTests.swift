import Foundation
import Testing
@testable import LoadgenCore
import LoadgenFuzz

/// Every committed fuzz input (the corpora libFuzzer grew, and each crash reproducer once fixed) replayed through
/// its target: none may crash or break a target's checks again. deploy/fuzz/run.sh runs the fuzzers themselves.
struct FuzzReplayTests {
    static let root = TestSupport.packageRoot.appendingPathComponent("Tests/Fuzz")

    static func inputs(_ target: FuzzTarget) -> [URL] {
        ["corpus", "crashes"].flatMap { kind -> [URL] in
            let dir = Self.root.appendingPathComponent("\(kind)/\(target.rawValue)")
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
            return names.filter { !$0.hasPrefix(".") }.sorted().map { dir.appendingPathComponent($0) }
        }
    }

    @Test(arguments: FuzzTarget.allCases)
    func everyCommittedInputReplaysCleanly(target: FuzzTarget) throws {
        let inputs = Self.inputs(target)
        #expect(inputs.count >= 5, "the \(target.rawValue) corpus is missing")
        for url in inputs {
            target.run(Array(try Data(contentsOf: url)))
        }
    }

    /// The hand-made seeds (named after message types, and `write` and `fetch` requests; libFuzzer's own are
    /// hashes) reach the decoders' happy paths (a corpus of inputs that all fail early would test little).
    @Test func theSeedsDecode() throws {
        let kinds = Set(WireMessage.Kind.allCases.map(\.rawValue))
        for url in Self.inputs(.messages) where kinds.contains(url.lastPathComponent) && !url.path.contains("/crashes/") {
            #expect(throws: Never.self, "\(url.lastPathComponent)") { _ = try FrameCodec.decodeBody(Array(try Data(contentsOf: url))) }
        }
        for url in Self.inputs(.request) where ["write", "fetch"].contains(url.lastPathComponent) && !url.path.contains("/crashes/") {
            let request = try FrameCodec.makeDecoder().decode(RunRequest.self, from: try Data(contentsOf: url))
            #expect(throws: Never.self) { try request.validate() }
        }
    }
}
