import Foundation
import Testing
@testable import LoadgenCore

/// Fetch runs through the built binary: the JSON report, the refusals, memory on a huge body.
@Suite(.timeLimit(.minutes(2)))
struct FetchCommandLineTests {
    @Test func aFetchRunPrintsASchemaValidReportWithPerURLFigures() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        try await TestHTTPServer.with { server in
            let targets = dir + "/targets.txt"
            try "# two URLs\n\(server.url())\n\(server.url("/status/404"))   # a missing page\n".write(toFile: targets, atomically: true, encoding: .utf8)
            let out = try await TestSupport.run(["coordinate", "--targets-file", targets, "--repeat", "5", "--mode", "threads,async",
                                                 "--workers", "2", "--json"], environment: ["LOADGEN_DB": dir + "/db.sqlite"])
            #expect(out.status == 0, "\(out.stderr)")
            let validator = try JSONSchemaValidator(schemaFile: CommandLineTests.reportSchema)
            let lines = try CommandLineTests.jsonLines(out.stdout)
            #expect(lines.count == 2)
            for line in lines {
                #expect(validator.validate(line) == [])
                #expect(line["workload"] as? String == "fetch")
                #expect(line["ops"] as? Int == 10)
                #expect(line["status_classes"] as? [String: Int] == ["2xx": 5, "4xx": 5])
                let perURL = try #require(line["per_url"] as? [[String: Any]])
                #expect(perURL.map { $0["ops"] as? Int } == [5, 5])
            }
            #expect(server.requests == 20)
        }
    }

    @Test func aDurationRunStopsOnTime() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        try await TestHTTPServer.with { server in
            let started = Date()
            let out = try await TestSupport.run(["coordinate", "--target", server.url("/delay/20"), "--duration", "1s",
                                                 "--mode", "async", "--workers", "2", "--json"],
                                                environment: ["LOADGEN_DB": dir + "/db.sqlite"])
            let elapsed = Date().timeIntervalSince(started)
            #expect(out.status == 0, "\(out.stderr)")
            let line = try #require(try CommandLineTests.jsonLines(out.stdout).first)
            let ops = line["ops"] as? Int ?? 0
            let duration = line["duration_s"] as? Double ?? 0
            // Two workers, each at most one request per 20 ms, for one second: never more than 110.
            #expect(ops > 0 && ops <= 110, "\(ops) requests")
            #expect(duration >= 0.95 && duration < 2.5, "ran for \(duration)s")
            #expect(elapsed < 8)
            #expect(server.requests == ops)
        }
    }

    /// A 96 MiB body streams through a worker whose memory stays far below it (peak RSS from /usr/bin/time).
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/time"), "needs /usr/bin/time"))
    func aHugeBodyIsNotKeptInMemory() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        try await TestHTTPServer.with { server in
            for mode in ["threads", "async"] {
                let out = try await TestSupport.run(["coordinate", "--target", server.url("/big/\(96 << 20)"), "--requests", "1",
                                                     "--mode", mode, "--workers", "1", "--json"],
                                                    environment: ["LOADGEN_DB": dir + "/db.sqlite"], measuringPeakMemory: true)
                #expect(out.status == 0, "\(out.stderr)")
                let line = try #require(try CommandLineTests.jsonLines(out.stdout).first)
                #expect(line["bytes"] as? Int == 96 << 20)
                let peak = try #require(out.peakMemoryKiB)
                // Buffered, the body alone would be 98,304 KiB.
                #expect(peak < 90_000, "\(mode): peak RSS \(peak) KiB for a 96 MiB body")
            }
        }
    }

    @Test(arguments: [
        (["--target", "ftp://127.0.0.1/file"], "ftp"),
        (["--target", "http://"], "no host"),
        (["--target", "http://127.0.0.1:99999/"], "99999"),
        (["--target", "http://127.0.0.1/", "--target", "/tmp"], "mix"),
        (["--target", "http://127.0.0.1/", "--files", "10"], "--files"),
        (["--target", "/tmp", "--requests", "10"], "--requests"),
        (["--target", "http://127.0.0.1/", "--rate", "0"], "--rate"),
        (["--target", "http://127.0.0.1/", "--rate", "10", "--ramp-to", "100"], "over --duration: give both"),
        (["--target", "http://127.0.0.1/", "--duration", "5s", "--ramp-to", "100"], "give both"),
        (["--target", "http://127.0.0.1/", "--rate", "10", "--duration", "5s", "--ramp-to", "0"], "--ramp-to must be"),
        (["--target", "/tmp", "--ramp-to", "10"], "--ramp-to applies to fetch runs"),
        (["--target", "http://127.0.0.1/", "--timeout", "never"], "never"),
        (["--target", "http://127.0.0.1/", "--method", "POST"], "POST"),
        (["--target", "http://127.0.0.1/", "--requests", "0"], "--requests"),
        (["--target", "http://127.0.0.1/", "--ca-file", "/nonexistent/ca.pem"], "/nonexistent/ca.pem"),
        (["--targets-file", "/nonexistent/targets"], "/nonexistent/targets"),
    ])
    func refusalsExitTwoNamingTheValue(arguments: [String], words: String) async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let out = try await TestSupport.run(["coordinate"] + arguments, environment: ["LOADGEN_DB": dir + "/db.sqlite"])
        #expect(out.status == 2, "\(arguments): \(out.stderr)")
        #expect(out.stderr.contains(words), "\(out.stderr)")
        #expect(out.stdout.isEmpty)
    }

    @Test func anEmptyTargetsFileIsRefused() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        try "# nothing here\n\n".write(toFile: dir + "/t", atomically: true, encoding: .utf8)
        let out = try await TestSupport.run(["coordinate", "--targets-file", dir + "/t"], environment: ["LOADGEN_DB": dir + "/db.sqlite"])
        #expect(out.status == 2)
        #expect(out.stderr.contains("lists no URLs"))
    }
}
