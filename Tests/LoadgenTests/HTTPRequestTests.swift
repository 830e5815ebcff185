import Foundation
import Testing
@testable import LoadgenCore
@testable import LoadgenWorkloads

/// Methods, headers, bodies, targets files, response checks and keep-alive: what the server received, counted at
/// the server (``TestHTTPServer/received``), in every mode.
@Suite(.timeLimit(.minutes(2)))
struct HTTPRequestTests {
    static func request(_ spec: FetchSpec, mode: ExecutionMode, workers: Int = 2) -> RunRequest {
        RunRequest(runID: "h-\(UUID().uuidString.prefix(8))", fetch: spec, mode: mode, workers: workers, seed: 1)
    }

    static let body = Array("{\"name\": \"gohan\", \"bytes\": [0, 1, 2]}\n".utf8) + [0, 255, 13, 10]

    // MARK: - What the server receives

    @Test(arguments: ExecutionMode.allCases)
    func methodsHeadersAndBodiesArriveByteForByte(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            let bodies = [RequestBody(file: "a.json", data: Data(Self.body)), RequestBody(file: "b.bin", data: Data([1, 2, 3]))]
            let spec = FetchSpec(
                urls: [server.url("/post"), server.url("/put"), server.url("/"), server.url("/delete"), server.url("/patch")],
                requests: 20, method: .post, headers: [HTTPHeader(name: "X-Run", value: "r1"), HTTPHeader(name: "content-TYPE", value: "application/json")],
                bodies: bodies, body: 0,
                requestTargets: [RequestTarget(), RequestTarget(method: .put, headers: [HTTPHeader(name: "X-Account-ID", value: "8675309")], body: 1),
                                 RequestTarget(method: .get, headers: [HTTPHeader(name: "Host", value: "example.test")]),
                                 RequestTarget(method: .delete), RequestTarget(method: .patch, body: 1)])
            try spec.validate()
            let messages = await RunHarness.perform(Self.request(spec, mode: mode, workers: mode == .sequential ? 1 : 3), phases: [.main])
            let done = try #require(RunHarness.done(messages), "\(messages)")
            #expect(done.status == .completed)
            #expect(done.ops == 20)
            let received = server.received
            #expect(received.count == 20)
            for path in ["/post", "/put", "/", "/delete", "/patch"] {
                #expect(received.filter { $0.path == path }.count == 4, "\(path)")
            }
            for r in received {
                #expect(r.version == "HTTP/1.1")
                #expect(r.header("X-Run") == ["r1"])
                #expect(r.headers.contains(HTTPHeader(name: "content-TYPE", value: "application/json")), "the name's case is kept")
                switch r.path {
                case "/post":
                    #expect(r.method == "POST")
                    #expect(r.body == Self.body)
                    #expect(r.header("Content-Length") == ["\(Self.body.count)"])
                case "/put":
                    #expect(r.method == "PUT")
                    #expect(r.body == [1, 2, 3])
                    #expect(r.header("X-Account-ID") == ["8675309"])
                case "/":
                    #expect(r.method == "GET")
                    #expect(r.body == Self.body, "the run's body goes with every request that has none of its own")
                    #expect(r.header("Host") == ["example.test"], "the user's Host replaces loadgen's")
                case "/delete":
                    #expect(r.method == "DELETE")
                    #expect(r.body == Self.body)
                default:
                    #expect(r.method == "PATCH")
                    #expect(r.body == [1, 2, 3])
                }
            }
        }
    }

    @Test(arguments: [ExecutionMode.threads, .async])
    func aPostWithoutABodySaysSoAndHeadAsksForNone(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            var spec = FetchSpec(urls: [server.url("/a"), server.url("/b")], requests: 4, method: .post,
                                 requestTargets: [RequestTarget(), RequestTarget(method: .head)])
            try spec.validate()
            var messages = await RunHarness.perform(Self.request(spec, mode: mode), phases: [.main])
            #expect(RunHarness.done(messages)?.ops == 4)
            for r in server.received {
                #expect(r.header("Content-Length") == (r.method == "POST" ? ["0"] : []), "\(r.method)")
                #expect(r.body.isEmpty)
            }
            spec = FetchSpec(urls: [server.url("/")], requests: 2, method: .options)
            messages = await RunHarness.perform(Self.request(spec, mode: mode), phases: [.main])
            #expect(RunHarness.done(messages)?.ops == 2)
            #expect(server.received.suffix(2).map(\.method) == ["OPTIONS", "OPTIONS"])
        }
    }

    /// Go's rules, which vegeta and hey follow: 301, 302 and 303 turn a POST into a GET without its body; 307 and 308
    /// repeat it, body and all.
    @Test(arguments: [ExecutionMode.threads, .async])
    func redirectsChangeTheRequestAsGoDoes(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            let spec = FetchSpec(urls: [server.url("/see-other"), server.url("/temporary"), server.url("/moved")], requests: 3,
                                 method: .post, headers: [HTTPHeader(name: "Authorization", value: "Token X")],
                                 bodies: [RequestBody(file: "b", data: Data(Self.body))], body: 0)
            let messages = await RunHarness.perform(Self.request(spec, mode: mode, workers: 1), phases: [.main])
            let done = try #require(RunHarness.done(messages))
            #expect(done.ops == 3)
            let received = server.received
            #expect(received.map(\.method) == ["POST", "GET", "POST", "POST", "POST", "GET"])
            #expect(received.map(\.path) == ["/see-other", "/", "/temporary", "/", "/moved", "/"])
            #expect(received.map { $0.body.count } == [Self.body.count, 0, Self.body.count, Self.body.count, Self.body.count, 0])
            // Same host: the credentials go along.
            #expect(received.allSatisfy { $0.header("Authorization") == ["Token X"] })
        }
    }

    @Test func credentialsStayOnTheirHostThroughARedirect() {
        let from = try! TargetURL.parse("http://a.test/x")
        let blueprint = RequestBlueprint(method: .get, headers: [HTTPHeader(name: "authorization", value: "t"),
                                                                 HTTPHeader(name: "Cookie", value: "c"), HTTPHeader(name: "X-K", value: "v")])
        #expect(blueprint.redirected(status: 302, from: from, to: try! TargetURL.parse("http://a.test/y")).headers.count == 3)
        #expect(blueprint.redirected(status: 302, from: from, to: try! TargetURL.parse("http://b.test/y")).headers
                == [HTTPHeader(name: "X-K", value: "v")])
    }

    @Test(arguments: ExecutionMode.allCases)
    func withoutKeepAliveEveryRequestHasItsOwnConnection(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            let spec = FetchSpec(urls: [server.url()], requests: 12, keepAlive: false)
            let messages = await RunHarness.perform(Self.request(spec, mode: mode), phases: [.main])
            #expect(RunHarness.done(messages)?.ops == 12)
            let received = server.received
            #expect(received.count == 12)
            #expect(Set(received.map(\.connection)).count == 12, "\(received.map(\.connection))")
            #expect(received.allSatisfy { $0.header("Connection") == ["close"] })
            #expect(server.connections == 12)
        }
    }

    @Test(arguments: [ExecutionMode.threads, .async])
    func withKeepAliveAWorkerKeepsItsConnection(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            let spec = FetchSpec(urls: [server.url()], requests: 12)
            let messages = await RunHarness.perform(Self.request(spec, mode: mode, workers: 2), phases: [.main])
            #expect(RunHarness.done(messages)?.ops == 12)
            #expect(server.connections == 2)
            #expect(server.received.allSatisfy { $0.header("Connection").isEmpty })
        }
    }

    // MARK: - Response checks

    @Test(arguments: ExecutionMode.allCases)
    func statusAndBodyChecksCountTheirOwnKinds(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            // 4 of each URL: "/" says hello (passes both), /status/503 fails the status, /padded/10/bye fails the body.
            let spec = FetchSpec(urls: [server.url("/"), server.url("/status/503"), server.url("/padded/10/bye")], requests: 12,
                                 expectStatus: "2xx,304", expectBody: "ell")
            let messages = await RunHarness.perform(Self.request(spec, mode: mode, workers: mode == .sequential ? 1 : 2), phases: [.main])
            let done = try #require(RunHarness.done(messages))
            #expect(done.ops == 4)
            #expect(done.errors == 8)
            let tally = try RunHarness.tally(messages)
            #expect(tally.errors[.status] == 4)
            #expect(tally.errors[.body] == 4)
            #expect(tally.errorSamples[.status]?.contains("503") == true)
            #expect(tally.errorSamples[.body]?.contains("'ell'") == true)
            // Every response still counts by status class; only the accepted ones are ops with bytes and latency.
            #expect(tally.statusClasses == [0, 8, 0, 0, 4])
            #expect(tally.targets.map(\.ops) == [4, 0, 0])
            #expect(tally.targets.map(\.errors) == [0, 4, 4])
            #expect(tally.latency.totalCount == 4)
            #expect(tally.bytes == 4 * 5)
            #expect(server.requests == 12)
        }
    }

    /// The body check looks at the first 64 KiB: text that starts inside them and ends past them is not there.
    @Test(arguments: [ExecutionMode.threads, .async])
    func theBodyCheckLooksAtTheFirst64KiB(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            let inside = 65536 - 3
            let spec = FetchSpec(urls: [server.url("/padded/\(inside)/abc"), server.url("/padded/\(inside + 1)/abc")],
                                 requests: 2, expectBody: "abc")
            let messages = await RunHarness.perform(Self.request(spec, mode: mode, workers: 1), phases: [.main])
            let tally = try RunHarness.tally(messages)
            #expect(tally.targets.map(\.ops) == [1, 0])
            #expect(tally.errors[.body] == 1)
        }
    }

    @Test func theBodySearchFindsTextSplitAcrossReadsAndChunks() throws {
        let response = Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\naaab\r\n3\r\naba\r\n2\r\nbx\r\n0\r\n\r\n".utf8)
        let decoded = "aaabababx"
        for needle in ["abab", "aabababx", "ba", "x", "abba", "bxa", "aaaa"] {
            let expectation = try BodyExpectation(needle)
            for split in 1...7 {
                var parser = HTTPResponseParser(expectation: expectation)
                var done: HTTPResponseParser.Response?
                var offset = 0
                while offset < response.count, done == nil {
                    let end = min(response.count, offset + split)
                    let part = Array(response[offset..<end])
                    let (consumed, r) = try part.withUnsafeBytes { try parser.feed($0) }
                    offset += consumed
                    done = r
                }
                #expect(done != nil)
                #expect(done?.bodyMatched == decoded.contains(needle), "\(needle) at \(split)")
            }
        }
        var parser = HTTPResponseParser(expectation: try BodyExpectation("abc"))
        let plain = Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nxxabd".utf8)
        let (_, r) = try plain.withUnsafeBytes { try parser.feed($0) }
        #expect(r?.bodyMatched == false)
    }

    @Test func statusListsAcceptCodesAndClasses() throws {
        let s = try StatusExpectation(parsing: "200, 201,3xx")
        #expect(s.accepts(200) && s.accepts(201) && s.accepts(300) && s.accepts(399))
        #expect(!s.accepts(202) && !s.accepts(404) && !s.accepts(0) && !s.accepts(1000))
        for bad in ["", "2xy", "20", "2000", "200,", "0xx", "099", "abc"] {
            #expect(throws: LoadgenError.self, "\(bad)") { try StatusExpectation(parsing: bad) }
        }
    }

    // MARK: - Request bytes

    @Test func theRequestBytesAreExactly() {
        let target = try! TargetURL.parse("http://127.0.0.1:8080/things?x=1")
        let blueprint = RequestBlueprint(method: .post, headers: [HTTPHeader(name: "Content-Type", value: "text/plain"),
                                                                  HTTPHeader(name: "user-agent", value: "mine")],
                                         body: Array("hi".utf8), closes: true)
        #expect(String(decoding: blueprint.bytes(for: target), as: UTF8.self)
                == "POST /things?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\nContent-Type: text/plain\r\nuser-agent: mine\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
        #expect(String(decoding: RequestBlueprint(method: .get).bytes(for: target), as: UTF8.self)
                == "GET /things?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: loadgen\r\nAccept: */*\r\n\r\n")
    }

    @Test(arguments: [
        ("X-A b: v", "not an HTTP token"), ("X-A: one\ntwo", "control character"), ("X-A: a\u{0}", "control character"),
        ("Content-Length: 3", "loadgen's to write"), ("transfer-encoding: chunked", "loadgen's to write"),
        ("NoColon", "not of the form"), (": v", "not an HTTP token"),
    ])
    func badHeadersAreRefusedNamingThem(text: String, words: String) {
        #expect { try HTTPHeader.parse(text) } throws: { error in
            (error as? LoadgenError)?.message.contains(words) == true
        }
    }

    @Test func reportsAndTheStoreKeepNoSecretsAndNoBodyBytes() throws {
        let spec = FetchSpec(urls: ["http://127.0.0.1/"], headers: [HTTPHeader(name: "Authorization", value: "Bearer s3cret"),
                                                                    HTTPHeader(name: "X-Trace", value: "t")],
                             bodies: [RequestBody(file: "/tmp/b.json", data: Data("secret body".utf8))], body: 0,
                             requestTargets: [RequestTarget(headers: [HTTPHeader(name: "cookie", value: "id=1")])])
        let redacted = spec.redacted
        #expect(redacted.headers == [HTTPHeader(name: "Authorization", value: "(redacted)"), HTTPHeader(name: "X-Trace", value: "t")])
        #expect(redacted.requestTargets?[0].headers == [HTTPHeader(name: "cookie", value: "(redacted)")])
        #expect(redacted.bodies.map(\.file) == ["/tmp/b.json"])
        #expect(redacted.bodies.map(\.size) == [11])
        #expect(redacted.bodies.allSatisfy { $0.data == nil })
        let json = String(decoding: try FrameCodec.makeEncoder().encode(redacted), as: UTF8.self)
        #expect(!json.contains("s3cret") && !json.contains("id=1") && !json.contains(Base64.encode(Array("secret body".utf8))))
    }

    @Test func aSpecStoredBeforeHeadersExistedStillDecodes() throws {
        let old = #"{"urls":["http://127.0.0.1/"],"repeat_count":1,"timeout_nanos":1000,"method":"GET","insecure_tls":false}"#
        let spec = try FrameCodec.makeDecoder().decode(FetchSpec.self, from: Data(old.utf8))
        #expect(spec.headers.isEmpty && spec.bodies.isEmpty && spec.keepAlive && spec.requestTargets == nil)
    }
}

/// vegeta's `http` targets format, from vegeta's own README and tests.
struct TargetsFileTests {
    @Test func vegetasReadmeExamples() throws {
        let simple = try TargetsFile.parse("""
            GET http://goku:9090/path/to/dragon?item=ball
            GET http://user:password@goku:9090/path/to
            HEAD http://goku:9090/path/to/success
            """, name: "t")
        #expect(simple == [
            TargetsFile.Entry(url: "http://goku:9090/path/to/dragon?item=ball", method: .get),
            TargetsFile.Entry(url: "http://goku:9090/path/to", method: .get,
                              headers: [HTTPHeader(name: "Authorization", value: "Basic dXNlcjpwYXNzd29yZA==")]),
            TargetsFile.Entry(url: "http://goku:9090/path/to/success", method: .head),
        ])
        let headers = try TargetsFile.parse("""
            GET http://user:password@goku:9090/path/to
            X-Account-ID: 8675309

            DELETE http://goku:9090/path/to/remove
            Confirmation-Token: 90215
            Authorization: Token DEADBEEF
            """, name: "t")
        #expect(headers.map(\.method) == [.get, .delete])
        #expect(headers[0].headers.map(\.name) == ["Authorization", "X-Account-ID"])
        #expect(headers[1].headers == [HTTPHeader(name: "Confirmation-Token", value: "90215"),
                                       HTTPHeader(name: "Authorization", value: "Token DEADBEEF")])
        let bodies = try TargetsFile.parse("""
            POST http://goku:9090/things
            @/path/to/newthing.json

            PATCH http://goku:9090/thing/71988591
            @/path/to/thing-71988591.json
            """, name: "t")
        #expect(bodies == [TargetsFile.Entry(url: "http://goku:9090/things", method: .post, bodyFile: "/path/to/newthing.json"),
                           TargetsFile.Entry(url: "http://goku:9090/thing/71988591", method: .patch,
                                             bodyFile: "/path/to/thing-71988591.json")])
        let both = try TargetsFile.parse("""
            POST http://goku:9090/things
            X-Account-ID: 99
            @/path/to/newthing.json
            """, name: "t")
        #expect(both == [TargetsFile.Entry(url: "http://goku:9090/things", method: .post,
                                           headers: [HTTPHeader(name: "X-Account-ID", value: "99")], bodyFile: "/path/to/newthing.json")])
        let comments = try TargetsFile.parse("""
            # get a dragon ball
            GET http://goku:9090/path/to/dragon?item=ball
            # specify a test account
            X-Account-ID: 99
            """, name: "t")
        #expect(comments == [TargetsFile.Entry(url: "http://goku:9090/path/to/dragon?item=ball", method: .get,
                                               headers: [HTTPHeader(name: "X-Account-ID", value: "99")])])
    }

    /// vegeta's `TestNewHTTPTargeter` file (its `http://:6060` hosts, which Go reads as localhost, given here as
    /// 127.0.0.1: loadgen refuses a URL without a host).
    @Test func vegetasTestFile() throws {
        let entries = try TargetsFile.parse("""
            GET http://127.0.0.1:6060/
            X-Header: 1
            X-Header: 2

            PUT https://127.0.0.1:6060/123

            DELETE http://moo:443/boo

            POST http://foobar.org/fnord
            Authorization: x12345
            @/tmp/body



            POST http://foobar.org/fnord/2
            Authorization: x67890
            @/tmp/body

            SUBSCRIBE http://foobar.org/sub

            # This is a comment. Lines starting with hash pound are ignored.
            GET http://127.0.0.1:6060/
            X-Header: 1
            X-Header: 2

            GET http://127.0.0.1:8000/
            # This is a comment. Lines starting with hash pound are ignored even inside the target.
            X-Header: 1
            # Another comment.
            X-Header: 2
            """, name: "t")
        #expect(entries.map { $0.method?.rawValue ?? "" } == ["GET", "PUT", "DELETE", "POST", "POST", "SUBSCRIBE", "GET", "GET"])
        #expect(entries.map(\.url) == ["http://127.0.0.1:6060/", "https://127.0.0.1:6060/123", "http://moo:443/boo",
                                       "http://foobar.org/fnord", "http://foobar.org/fnord/2", "http://foobar.org/sub",
                                       "http://127.0.0.1:6060/", "http://127.0.0.1:8000/"])
        #expect(entries.map(\.bodyFile) == [nil, nil, nil, "/tmp/body", "/tmp/body", nil, nil, nil])
        #expect(entries[0].headers == [HTTPHeader(name: "X-Header", value: "1"), HTTPHeader(name: "X-Header", value: "2")])
        #expect(entries[7].headers == entries[0].headers)
        #expect(entries[3].headers == [HTTPHeader(name: "Authorization", value: "x12345")])
    }

    /// vegeta's refusals, each with a sentence naming the line.
    @Test(arguments: [
        ("GET", "request line"), ("DOwork http://127.0.0.1:6000", "request line"), ("DO_WORK http://127.0.0.1:6000", "request line"),
        ("GET foobar", "not a URL"), ("GET http://127.0.0.1:6060\nAuthorization", "not a header line"),
        ("GET http://127.0.0.1:6060\nAuthorization:", "empty name or value"), ("GET http://127.0.0.1:6060\n: 1234", "empty name or value"),
        ("GET http://127.0.0.1:6060\n@", "names no body file"), ("GET http://127.0.0.1/\nX-A: 1\n@/b\nX-B: 2", "line 4"),
        ("GET http://127.0.0.1/\nContent-Length: 4", "loadgen's to write"), ("# only a comment\n", "lists no targets"),
    ])
    func badTargetsAreRefused(text: String, words: String) {
        #expect { try TargetsFile.parse(text, name: "t") } throws: { error in
            (error as? LoadgenError)?.message.contains(words) == true
        }
    }

    @Test func aURLListStaysAURLList() throws {
        let entries = try TargetsFile.parse("# two\nhttp://a.test/  # a comment\n\nhttps://b.test/x\n", name: "t")
        #expect(entries == [TargetsFile.Entry(url: "http://a.test/"), TargetsFile.Entry(url: "https://b.test/x")])
    }
}
