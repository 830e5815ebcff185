import Foundation
import Testing
@testable import LoadgenCore

/// The every-mode comparison through the built binary, repeated: each mode's run starts only after the last one
/// closed on the agent, so `processes` (whose worker pool tears down after its last message) right before `async`
/// never meets a busy agent.
@Suite(.timeLimit(.minutes(3)))
struct LifecycleEndToEndTests {
    static let allModes = ["sequential", "threads", "processes", "async"]

    @Test func everyModeOfAWriteRunCompletesTimeAfterTime() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        for attempt in 0..<3 {
            let out = try await TestSupport.run(["coordinate", "--target", root, "--files", "40", "--mode", "all",
                                                 "--workers", "3", "--json"], environment: ["LOADGEN_DB": root + "/db.sqlite"])
            #expect(out.status == 0, "attempt \(attempt): \(out.stderr)")
            #expect(!out.stderr.contains("busy"), "attempt \(attempt): \(out.stderr)")
            let lines = try CommandLineTests.jsonLines(out.stdout)
            #expect(lines.map { $0["mode"] as? String } == Self.allModes, "attempt \(attempt)")
            #expect(lines.allSatisfy { $0["status"] as? String == "completed" && $0["ops"] as? Int == 40 })
            #expect(out.stderr.contains("speed-up"), "attempt \(attempt): the comparison table is printed")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).filter { $0.hasPrefix("loadgen-") }.isEmpty)
    }

    @Test func everyModeOfAFetchRunCompletesTimeAfterTimeWithTheCountsAtTheServer() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        try await TestHTTPServer.with { server in
            for attempt in 0..<3 {
                let out = try await TestSupport.run(["coordinate", "--target", server.url(), "--requests", "12", "--mode", "all",
                                                     "--workers", "2", "--json"], environment: ["LOADGEN_DB": dir + "/db.sqlite"])
                #expect(out.status == 0, "attempt \(attempt): \(out.stderr)")
                let lines = try CommandLineTests.jsonLines(out.stdout)
                #expect(lines.map { $0["mode"] as? String } == Self.allModes, "attempt \(attempt)")
                #expect(lines.allSatisfy { $0["status"] as? String == "completed" && $0["ops"] as? Int == 12 })
            }
            #expect(server.requests == 3 * 4 * 12)
        }
    }
}
