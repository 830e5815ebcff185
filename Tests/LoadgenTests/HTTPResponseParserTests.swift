import Testing
@testable import LoadgenCore

/// The response parser on its own: every response is fed whole, byte by byte, and split at every point, and must
/// parse the same each way (lines are read where they lie when whole and gathered when split).
struct HTTPResponseParserTests {
    struct Parsed: Equatable {
        var consumed: Int
        var response: HTTPResponseParser.Response
    }

    /// Feeds `chunks` in order until a response completes.
    static func parse(_ chunks: [[UInt8]], isHead: Bool = false) throws -> Parsed? {
        var parser = HTTPResponseParser(isHead: isHead)
        var consumed = 0
        for chunk in chunks {
            let (used, response) = try chunk.withUnsafeBytes { try parser.feed($0) }
            consumed += used
            if let response { return Parsed(consumed: consumed, response: response) }
        }
        return nil
    }

    /// The same response every way it can be split.
    static func parseEveryWay(_ text: String, isHead: Bool = false) throws -> Parsed? {
        let bytes = Array(text.utf8)
        let whole = try Self.parse([bytes], isHead: isHead)
        #expect(try Self.parse(bytes.map { [$0] }, isHead: isHead) == whole, "byte by byte")
        for split in 1..<bytes.count {
            #expect(try Self.parse([Array(bytes[..<split]), Array(bytes[split...])], isHead: isHead) == whole, "split at \(split)")
        }
        return whole
    }

    @Test func contentLengthKeepAlive() throws {
        let r = try #require(try Self.parseEveryWay("HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 5\r\n\r\nhello"))
        #expect(r.response == .init(status: 200, bodyBytes: 5, closesConnection: false, location: nil))
        #expect(r.consumed == 54)
    }

    @Test func theNextResponsesBytesAreLeft() throws {
        let text = "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n"
        let r = try #require(try Self.parse([Array(text.utf8)]))
        #expect(r.response.status == 204)
        #expect(r.consumed == 27)
    }

    @Test func chunkedWithExtensionsAndTrailers() throws {
        let r = try #require(try Self.parseEveryWay(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n5;ext=1\r\nhello\r\n6 \r\n world\r\n0\r\nX-T: 1\r\n\r\n"))
        #expect(r.response == .init(status: 200, bodyBytes: 11, closesConnection: false, location: nil))
    }

    @Test func connectionCloseAndHTTP10() throws {
        #expect(try Self.parseEveryWay("HTTP/1.1 200 OK\r\nCONNECTION: Close\r\nContent-Length: 0\r\n\r\n")?.response.closesConnection == true)
        #expect(try Self.parseEveryWay("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx")?.response.closesConnection == true)
        #expect(try Self.parseEveryWay("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx")?.response.closesConnection == false)
    }

    @Test func redirectLocationAndBareLF() throws {
        let r = try #require(try Self.parseEveryWay("HTTP/1.1 302 Found\nLocation:  /next?a=1 \nContent-Length: 0\n\n"))
        #expect(r.response == .init(status: 302, bodyBytes: 0, closesConnection: false, location: "/next?a=1"))
    }

    @Test func interimResponsesHeadAndNotModifiedHaveNoBody() throws {
        #expect(try Self.parseEveryWay("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")?.response.bodyBytes == 2)
        #expect(try Self.parseEveryWay("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", isHead: true)?.response.bodyBytes == 0)
        #expect(try Self.parseEveryWay("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n")?.response.status == 304)
    }

    @Test func aBodyUntilCloseEndsWithTheConnection() throws {
        var parser = HTTPResponseParser()
        let bytes = Array("HTTP/1.1 200 OK\r\n\r\nabc".utf8)
        #expect(try bytes.withUnsafeBytes { try parser.feed($0) }.response == nil)
        #expect(try parser.end() == .init(status: 200, bodyBytes: 3, closesConnection: true, location: nil))
    }

    @Test(arguments: [
        "HTTP/2 200 OK\r\n\r\n",
        "HTTP/1.1 2x0 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 12a\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
    ])
    func malformedResponsesAreRefused(text: String) {
        #expect(throws: HTTPResponseParser.Failure.self) { try Self.parse([Array(text.utf8)]) }
        #expect(throws: HTTPResponseParser.Failure.self) { try Self.parse(Array(text.utf8).map { [$0] }) }
    }

    @Test func aLineLongerThanTheCapIsRefusedWhetherWholeOrSplit() throws {
        let long = "HTTP/1.1 200 OK\r\nX: " + String(repeating: "a", count: HTTPResponseParser.maxLineBytes) + "\r\n\r\n"
        let bytes = Array(long.utf8)
        #expect(throws: HTTPResponseParser.Failure.self) { try Self.parse([bytes]) }
        #expect(throws: HTTPResponseParser.Failure.self) { try Self.parse(stride(from: 0, to: bytes.count, by: 1000).map { Array(bytes[$0..<min($0 + 1000, bytes.count)]) }) }
        // At the cap exactly (the CR counts, the LF does not), it is accepted.
        let fits = "HTTP/1.1 200 OK\r\nX: " + String(repeating: "a", count: HTTPResponseParser.maxLineBytes - 4) + "\r\nContent-Length: 0\r\n\r\n"
        #expect(try Self.parse([Array(fits.utf8)])?.response.status == 200)
    }

    @Test func tooManyHeaderLinesAreRefused() {
        let text = "HTTP/1.1 200 OK\r\n" + String(repeating: "X: y\r\n", count: HTTPResponseParser.maxHeaderLines + 1) + "\r\n"
        #expect(throws: HTTPResponseParser.Failure.self) { try Self.parse([Array(text.utf8)]) }
    }
}
