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

    /// A targets file in vegeta's format with a body file, `--header` and the checks, through the binary: what the
    /// server got, the report (schema-valid, methods per URL, kinds), and a store and report without the secret.
    @Test func aVegetaTargetsFileRunsAndItsSecretsAreNotKept() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        try await TestHTTPServer.with { server in
            try Data("{\"n\": 1}".utf8).write(to: URL(fileURLWithPath: dir + "/thing.json"))
            let targets = dir + "/targets.http"
            try """
                # create a thing
                POST \(server.url("/padded/2/ok"))
                Content-Type: application/json
                @\(dir)/thing.json

                GET http://user:s3cret@127.0.0.1:\(server.port)/status/500
                X-Account-ID: 99
                """.write(toFile: targets, atomically: true, encoding: .utf8)
            let db = dir + "/db.sqlite"
            let out = try await TestSupport.run(["coordinate", "--targets-file", targets, "--requests", "6", "--mode", "threads",
                                                 "--workers", "2", "--header", "Authorization: Bearer t0ken", "--expect-status", "2xx",
                                                 "--json"], environment: ["LOADGEN_DB": db])
            #expect(out.status == 0, "\(out.stderr)")
            let line = try #require(try CommandLineTests.jsonLines(out.stdout).first)
            #expect(try JSONSchemaValidator(schemaFile: CommandLineTests.reportSchema).validate(line) == [])
            #expect(line["ops"] as? Int == 3)
            #expect(line["errors_by_kind"] as? [String: Int] == ["status": 3])
            let perURL = try #require(line["per_url"] as? [[String: Any]])
            #expect(perURL.map { $0["method"] as? String } == ["POST", "GET"])
            #expect(line["tls_library"] == nil, "no https URL")
            let received = server.received
            #expect(received.count == 6)
            for r in received where r.method == "POST" {
                #expect(r.body == Array("{\"n\": 1}".utf8))
                #expect(r.header("Content-Type") == ["application/json"])
                #expect(r.header("Authorization") == ["Bearer t0ken"])
            }
            for r in received where r.method == "GET" {
                #expect(r.path == "/status/500")
                // The run's header, then the URL's credentials as Go sends them, then the target's own.
                #expect(r.header("Authorization") == ["Bearer t0ken", "Basic " + Base64.encode(Array("user:s3cret".utf8))])
                #expect(r.header("X-Account-ID") == ["99"])
            }
            #expect(!out.stdout.contains("t0ken") && !out.stdout.contains(Base64.encode(Array("user:s3cret".utf8))))
            #expect(out.stdout.contains("(redacted)"))
            let show = try await TestSupport.run(["history", "show", line["run_id"] as! String, "--json"], environment: ["LOADGEN_DB": db])
            #expect(show.status == 0, "\(show.stderr)")
            #expect(show.stdout.contains("thing.json") && !show.stdout.contains("t0ken"))
            let stored = try Data(contentsOf: URL(fileURLWithPath: db))
            let wal = (try? Data(contentsOf: URL(fileURLWithPath: db + "-wal"))) ?? Data()
            for secret in ["t0ken", Base64.encode(Array("user:s3cret".utf8)), Base64.encode(Array("{\"n\": 1}".utf8))] {
                #expect(stored.range(of: Data(secret.utf8)) == nil && wal.range(of: Data(secret.utf8)) == nil, "\(secret) was stored")
            }
        }
    }

    /// HTTP/1.1 over TLS is the system's OpenSSL in every mode (async too, as non-blocking sessions), so an https
    /// comparison of modes compares the modes, not TLS libraries; the report still names it.
    @Test func anHTTPSComparisonOfModesUsesOneTLSLibrary() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let (caFile, context) = try TestHTTPServer.makeCertificates(in: dir)
        try await TestHTTPServer.with(tls: context) { server in
            let out = try await TestSupport.run(["coordinate", "--target", server.url(scheme: "https"), "--ca-file", caFile,
                                                 "--requests", "4", "--mode", "threads,async", "--workers", "2", "--json"],
                                                environment: ["LOADGEN_DB": dir + "/db.sqlite"])
            #expect(out.status == 0, "\(out.stderr)")
            let lines = try CommandLineTests.jsonLines(out.stdout)
            #expect(lines.map { $0["tls_library"] as? String } == ["OpenSSL (system)", "OpenSSL (system)"])
            #expect(lines.map { $0["ops"] as? Int } == [4, 4])
            #expect(out.stderr.contains("OpenSSL (system)") && !out.stderr.contains("BoringSSL"), "\(out.stderr)")
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
        (["--target", "http://127.0.0.1/", "--method", "P0ST"], "P0ST"),
        (["--target", "http://127.0.0.1/", "--header", "Bad Name: x"], "Bad Name"),
        (["--target", "http://127.0.0.1/", "--header", "X-A: one\ntwo"], "control character"),
        (["--target", "http://127.0.0.1/", "--header", "Content-Length: 5"], "Content-Length"),
        (["--target", "http://127.0.0.1/", "--body-file", "/nonexistent/body"], "/nonexistent/body"),
        (["--target", "http://127.0.0.1/", "--expect-status", "2xy"], "2xy"),
        (["--target", "http://127.0.0.1/", "--expect-status", ""], "empty"),
        (["--target", "http://127.0.0.1/", "--expect-body", ""], "--expect-body"),
        (["--target", "http://127.0.0.1/", "--method", "HEAD", "--expect-body", "x"], "HEAD"),
        (["--target", "/tmp", "--header", "X: y"], "--header applies to fetch runs"),
        (["--target", "/tmp", "--no-keepalive"], "--no-keepalive applies to fetch runs"),
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
        #expect(out.stderr.contains("lists no targets"))
    }
}
