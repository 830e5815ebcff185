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

    /// The first thing the fuzzers' round-trip check found: an interval whose histogram counts, each times its value,
    /// add up past 64 bits decoded, and then crashed whoever iterated the histogram (making it sparse again, as an
    /// agent does before forwarding a worker process's interval). Both decoders now refuse it, leaving no trace.
    @Test func aHistogramTooLargeToIterateIsRefusedByBothDecoders() throws {
        let url = Self.root.appendingPathComponent("crashes/messages/histogram-volume-overflow")
        guard case .interval(let interval) = try FrameCodec.decodeBody(Array(try Data(contentsOf: url))) else {
            Issue.record("the reproducer is not an interval")
            return
        }
        do {
            _ = try interval.tally()
            Issue.record("a histogram too large to iterate was decoded")
        } catch {
            #expect(error.message.contains("counts are too large"), "\(error.message)")
        }
        var counts = LatencyCounts()
        do {
            try counts.add(interval.latency)
            Issue.record("a histogram too large to iterate was merged")
        } catch {
            #expect(error.message.contains("counts are too large"), "\(error.message)")
        }
        #expect(counts.total == 0)
    }
}

