import Foundation
import Testing
@testable import LoadgenCore
@testable import LoadgenWorkloads

/// `--http2` in async mode, counted at an HTTP/2 server in this process (``TestH2Server``).
@Suite(.timeLimit(.minutes(2)))
struct HTTP2Tests {
    static func request(_ spec: FetchSpec, connections: Int = 2, streams: Int = 1) -> RunRequest {
        var spec = spec
        spec.http2 = true
        spec.streams = streams
        return RunRequest(runID: "h2-\(UUID().uuidString.prefix(8))", fetch: spec, mode: .async, workers: connections, seed: 1)
    }

    @Test func methodsHeadersAndBodiesArriveOverH2C() async throws {
        try await TestH2Server.with { server in
            let body = HTTPRequestTests.body
            let spec = FetchSpec(urls: [server.url("/"), server.url("/status/201")], requests: 24, method: .post,
                                 headers: [HTTPHeader(name: "X-Run", value: "r1"), HTTPHeader(name: "Host", value: "example.test")],
                                 bodies: [RequestBody(file: "b", data: Data(body))], body: 0,
                                 requestTargets: [RequestTarget(), RequestTarget(method: .put, headers: [HTTPHeader(name: "X-K", value: "v")])])
            let request = Self.request(spec, connections: 2, streams: 3)
            try request.validate()
            let messages = await RunHarness.perform(request, phases: [.main])
            let done = try #require(RunHarness.done(messages), "\(messages)")
            #expect(done.status == .completed)
            #expect(done.ops == 24, "\(String(describing: (try? RunHarness.tally(messages))?.errorSamples))")
            let tally = try RunHarness.tally(messages)
            #expect(tally.statusClasses == [0, 24, 0, 0, 0])
            #expect(tally.bytes == 12 * 5 + 12 * 6)
            let received = server.received
            #expect(received.count == 24)
            #expect(server.connections == 2, "--workers counts connections")
            for r in received {
                #expect(r.version == "HTTP/2")
                #expect(r.body == body)
                #expect(r.header("content-length") == ["\(body.count)"])
                #expect(r.header("x-run") == ["r1"], "names go lower-case on HTTP/2")
                #expect(r.header("host").isEmpty, "Host becomes :authority")
                #expect(r.method == (r.path == "/" ? "POST" : "PUT"))
                if r.method == "PUT" { #expect(r.header("x-k") == ["v"]) }
            }
        }
    }

    /// `--streams` requests are in flight on a connection at once, never more than the server's SETTINGS allow.
    @Test(arguments: [(serverLimit: 100, streams: 4, expected: 4), (serverLimit: 2, streams: 8, expected: 2)])
    func streamsRunConcurrentlyWithinThePeersLimit(serverLimit: Int, streams: Int, expected: Int) async throws {
        try await TestH2Server.with(maxConcurrentStreams: serverLimit) { server in
            let spec = FetchSpec(urls: [server.url("/delay/60")], requests: 16)
            let messages = await RunHarness.perform(Self.request(spec, connections: 1, streams: streams), phases: [.main])
            let done = try #require(RunHarness.done(messages))
            #expect(done.ops == 16, "\(String(describing: (try? RunHarness.tally(messages))?.errorSamples))")
            #expect(server.connections == 1)
            #expect(server.mostConcurrentStreams == expected)
        }
    }

    /// A GOAWAY part-way: the streams the server saw are answered, the ones it refused are sent again on a new
    /// connection; every request is accounted for, nothing crashes.
    @Test func aGoAwayInTheMiddleOfARunIsCountedNotCrashed() async throws {
        try await TestH2Server.with(goAwayAfter: 5) { server in
            let spec = FetchSpec(urls: [server.url("/delay/5")], requests: 40)
            let messages = await RunHarness.perform(Self.request(spec, connections: 1, streams: 4), phases: [.main])
            let done = try #require(RunHarness.done(messages))
            #expect(done.ops + done.errors == 40)
            #expect(done.ops == 40, "refused streams were never processed, so they are sent again: \(String(describing: (try? RunHarness.tally(messages))?.errorSamples))")
            #expect(server.connections >= 2)
            #expect(server.received.count == 40)
        }
    }

    /// NIO's header validation is off for speed; a malformed response block is still the request's protocol error
    /// (found by the client's own pass), its stream is reset, and the connection carries the next requests.
    @Test func aMalformedResponseHeaderBlockIsAProtocolError() async throws {
        try await TestH2Server.with { server in
            let spec = FetchSpec(urls: [server.url("/malformed/upper"), server.url("/malformed/connection"),
                                        server.url("/malformed/pseudo"), server.url("/")], requests: 8)
            let messages = await RunHarness.perform(Self.request(spec, connections: 1, streams: 2), phases: [.main])
            let tally = try RunHarness.tally(messages)
            #expect(tally.ops == 2, "only / is well formed")
            #expect(tally.errors[.protocol] == 6, "\(tally.errorSamples)")
            #expect(server.connections == 1)
        }
    }

    @Test func checksAndRedirectsWorkOverHTTP2() async throws {
        try await TestH2Server.with { server in
            let spec = FetchSpec(urls: [server.url("/"), server.url("/status/503"), server.url("/padded/3/bye"), server.url("/see-other")],
                                 requests: 8, method: .post, bodies: [RequestBody(file: "b", data: Data([1, 2]))], body: 0,
                                 expectStatus: "2xx", expectBody: "ell")
            let messages = await RunHarness.perform(Self.request(spec, connections: 1, streams: 2), phases: [.main])
            let tally = try RunHarness.tally(messages)
            #expect(tally.ops == 4, "/ and /see-other (which ends at /)")
            #expect(tally.errors[.status] == 2)
            #expect(tally.errors[.body] == 2)
            #expect(tally.redirects == 2)
            let afterRedirect = server.received.filter { $0.path == "/" && $0.method == "GET" }
            #expect(afterRedirect.count == 2, "303 turns the POST into a GET")
            #expect(afterRedirect.allSatisfy { $0.body.isEmpty })
        }
    }

    /// A stream past its timeout is reset (RST_STREAM) and counted; the connection goes on with the next request.
    @Test func aSlowStreamTimesOutAndTheConnectionCarriesOn() async throws {
        try await TestH2Server.with { server in
            let spec = FetchSpec(urls: [server.url("/delay/1500"), server.url("/"), server.url("/")], requests: 6,
                                 timeoutNanos: 200_000_000, method: .head)
            let messages = await RunHarness.perform(Self.request(spec, connections: 1, streams: 1), phases: [.main])
            let tally = try RunHarness.tally(messages)
            #expect(tally.errors[.timeout] == 2)
            #expect(tally.ops == 4, "HEAD responses end with their headers: \(tally.errorSamples)")
            #expect(server.connections == 1)
        }
    }

    @Test func h2OverTLSByALPNAndNoFallback() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let (caFile, h2) = try TestH2Server.tlsContext(certificatesIn: dir, alpn: ["h2"])
        try await TestH2Server.with(tls: h2) { server in
            let spec = FetchSpec(urls: [server.url(scheme: "https")], requests: 6, caFile: caFile)
            let messages = await RunHarness.perform(Self.request(spec, connections: 2, streams: 2), phases: [.main])
            #expect(RunHarness.done(messages)?.ops == 6, "\(String(describing: (try? RunHarness.tally(messages))?.errorSamples))")
            #expect(server.received.allSatisfy { $0.version == "HTTP/2" })
        }
        try FileManager.default.createDirectory(atPath: dir + "/b", withIntermediateDirectories: true)
        let (_, http1Only) = try TestH2Server.tlsContext(certificatesIn: dir + "/b", alpn: ["http/1.1"])
        try await TestHTTPServer.with(tls: http1Only) { server in
            let spec = FetchSpec(urls: [server.url(scheme: "https")], requests: 4, caFile: dir + "/b/ca.pem")
            let messages = await RunHarness.perform(Self.request(spec, connections: 1), phases: [.main])
            let tally = try RunHarness.tally(messages)
            #expect(tally.ops == 0)
            #expect(tally.errors[.protocol] == 4)
            #expect(tally.errorSamples[.protocol]?.contains("did not agree to HTTP/2") == true,
                    "\(tally.errorSamples)")
            #expect(server.requests == 0, "no HTTP/1.1 request was sent")
        }
    }

    /// Through the binary: --http2 alone runs async, and the report (schema-valid) says HTTP/2 and its streams.
    @Test func theCommandRunsHTTP2InAsyncModeAndReportsIt() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        try await TestH2Server.with { server in
            let out = try await TestSupport.run(["coordinate", "--target", server.url(), "--http2", "--streams", "3", "--workers", "2",
                                                 "--requests", "30", "--expect-status", "2xx", "--json"],
                                                environment: ["LOADGEN_DB": dir + "/db.sqlite"])
            #expect(out.status == 0, "\(out.stderr)")
            let lines = try CommandLineTests.jsonLines(out.stdout)
            #expect(lines.count == 1)
            let line = try #require(lines.first)
            #expect(try JSONSchemaValidator(schemaFile: CommandLineTests.reportSchema).validate(line) == [])
            #expect(line["mode"] as? String == "async")
            #expect(line["ops"] as? Int == 30)
            let fetch = try #require(line["fetch"] as? [String: Any])
            #expect(fetch["http2"] as? Bool == true)
            #expect(fetch["streams"] as? Int == 3)
            #expect(server.received.count == 30)
            #expect(server.connections == 2)
            #expect(out.stderr.contains("HTTP/2, 3 streams a connection"), "\(out.stderr)")
        }
    }

    @Test(arguments: [
        (["--http2", "--mode", "threads"], "--http2 runs in async mode only"),
        (["--http2", "--mode", "all"], "--http2 runs in async mode only"),
        (["--streams", "4"], "give --http2 too"),
        (["--http2", "--streams", "0"], "--streams must be from 1"),
        (["--http2", "--no-keepalive"], "not both"),
        (["--http2", "--header", "Connection: close"], "HTTP/2 forbids"),
    ])
    func refusals(arguments: [String], words: String) async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let out = try await TestSupport.run(["coordinate", "--target", "http://127.0.0.1:9/"] + arguments,
                                            environment: ["LOADGEN_DB": dir + "/db.sqlite"])
        #expect(out.status == 2, "\(arguments): \(out.stderr)")
        #expect(out.stderr.contains(words), "\(out.stderr)")
    }
}
