#if canImport(Glibc)
import Glibc
#endif
/// An incremental HTTP/1.1 response parser: bytes in, response events out. Pure (no I/O), so the blocking client
/// (sequential, threads, processes) and the event-loop client (async) parse alike, and tests drive it byte by byte.
///
/// It reads the status line and the headers it needs (Content-Length, Transfer-Encoding, Connection, Location),
/// then skips the body, counting its bytes: bodies are never kept, so a 1 GiB response costs what a 1 KiB one
/// does. Bodies end by Content-Length, by chunked encoding, or by the connection closing; 1xx, 204 and 304
/// responses and responses to HEAD have none.
public struct HTTPResponseParser: Sendable {
    public enum Failure: Error, Sendable, Hashable {
        /// The bytes are not an HTTP/1.x response.
        case malformed(String)
    }

    /// What a completed response was.
    public struct Response: Sendable, Hashable {
        public var status: Int
        public var bodyBytes: UInt64
        /// The server asked to close the connection (or the body ran to EOF): it cannot be reused.
        public var closesConnection: Bool
        public var location: String?
        /// With a body expectation: whether its text was in the first 64 KiB of the body.
        public var bodyMatched: Bool = false

        public init(status: Int, bodyBytes: UInt64, closesConnection: Bool, location: String?, bodyMatched: Bool = false) {
            self.status = status
            self.bodyBytes = bodyBytes
            self.closesConnection = closesConnection
            self.location = location
            self.bodyMatched = bodyMatched
        }
    }

    private enum State: Sendable, Hashable {
        case statusLine
        case headers
        case fixedBody(remaining: UInt64)
        case chunkSize
        case chunkData(remaining: UInt64)
        case chunkDataEnd
        case trailers
        case untilClose
        case done
    }

    /// The longest status line or header line accepted (a hostile server cannot make the parser buffer more).
    public static let maxLineBytes = 16 * 1024
    /// The most header lines accepted.
    public static let maxHeaderLines = 200

    private var state = State.statusLine
    private var line: [UInt8] = []
    private var headerLines = 0
    private var status = 0
    private var contentLength: UInt64?
    private var chunked = false
    private var closes = false
    private var location: String?
    private var bodyBytes: UInt64 = 0
    private let isHead: Bool
    /// `--expect-body`: the text searched for as the body streams past, and how far the search has got.
    private let expectation: BodyExpectation?
    private var search = BodyExpectation.Progress()
    /// Whether any byte of this response has arrived (a connection that dies before one was a stale keep-alive).
    public private(set) var started = false

    public init(isHead: Bool = false, expectation: BodyExpectation? = nil) {
        self.isHead = isHead
        self.expectation = expectation
    }

    /// Shows body bytes to the expectation's search, when there is one.
    @inline(__always)
    private mutating func sawBody(_ input: UnsafeBufferPointer<UInt8>, _ from: Int, _ count: Int) {
        guard let expectation = self.expectation, count > 0 else { return }
        expectation.scan(UnsafeBufferPointer(rebasing: input[from..<(from + count)]), &self.search)
    }

    /// Feeds bytes; returns how many were consumed (the rest belong to the next response on the connection) and
    /// the response when it completed.
    public mutating func feed(_ bytes: UnsafeRawBufferPointer) throws(Failure) -> (consumed: Int, response: Response?) {
        let input = UnsafeBufferPointer(start: bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), count: bytes.count)
        var i = 0
        let count = input.count
        if count > 0 { self.started = true }
        while i < count {
            switch self.state {
            case .statusLine, .headers, .chunkSize, .chunkDataEnd, .trailers:
                // Line-oriented states. A line whole in this buffer is read where it lies; only a line split across
                // reads is gathered, once, into `line`.
                // memchr, vectorized, rather than a loop a byte at a time: most of the parser's time went here.
                let end = Self.index(of: UInt8(ascii: "\n"), in: input, from: i) ?? count
                guard self.line.count + (end - i) <= Self.maxLineBytes else {
                    throw .malformed("a header or chunk line longer than \(Self.maxLineBytes) bytes")
                }
                if end == count {
                    self.line.append(contentsOf: UnsafeBufferPointer(rebasing: input[i..<end]))
                    i = count
                    continue
                }
                if self.line.isEmpty {
                    try self.handleLine(Self.trimmingCR(UnsafeBufferPointer(rebasing: input[i..<end])))
                } else {
                    self.line.append(contentsOf: UnsafeBufferPointer(rebasing: input[i..<end]))
                    var gathered: [UInt8] = []
                    swap(&gathered, &self.line)
                    defer {
                        gathered.removeAll(keepingCapacity: true)
                        self.line = gathered
                    }
                    try gathered.withUnsafeBufferPointer { (text) throws(Failure) in try self.handleLine(Self.trimmingCR(text)) }
                }
                i = end + 1
                if self.state == .done { return (i, self.finish()) }
            case .fixedBody(let remaining):
                let take = UInt64(min(UInt64(count - i), remaining))
                self.sawBody(input, i, Int(take))
                self.bodyBytes &+= take
                i += Int(take)
                let left = remaining - take
                if left == 0 {
                    self.state = .done
                    return (i, self.finish())
                }
                self.state = .fixedBody(remaining: left)
            case .chunkData(let remaining):
                let take = UInt64(min(UInt64(count - i), remaining))
                self.sawBody(input, i, Int(take))
                self.bodyBytes &+= take
                i += Int(take)
                let left = remaining - take
                self.state = left == 0 ? .chunkDataEnd : .chunkData(remaining: left)
            case .untilClose:
                self.sawBody(input, i, count - i)
                self.bodyBytes &+= UInt64(count - i)
                i = count
            case .done:
                return (i, self.finish())
            }
        }
        return (i, nil)
    }

    /// The first index at or after `start` holding `byte`, or nil.
    @inline(__always)
    static func index(of byte: UInt8, in bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
        guard start < bytes.count, let base = bytes.baseAddress else { return nil }
        guard let found = memchr(base + start, Int32(byte), bytes.count - start) else { return nil }
        return base.distance(to: found.assumingMemoryBound(to: UInt8.self))
    }

    private static func trimmingCR(_ line: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
        line.last == UInt8(ascii: "\r") ? UnsafeBufferPointer(rebasing: line.dropLast()) : line
    }

    /// The connection closed: completes a body delimited by the close, or fails a response cut short.
    public mutating func end() throws(Failure) -> Response {
        switch self.state {
        case .untilClose:
            self.state = .done
            self.closes = true
            return self.finish()
        case .done:
            return self.finish()
        default:
            throw .malformed(self.started ? "the connection closed in the middle of a response" : "the connection closed before a response")
        }
    }

    private mutating func finish() -> Response {
        Response(status: self.status, bodyBytes: self.bodyBytes, closesConnection: self.closes, location: self.location,
                 bodyMatched: self.search.found)
    }

    /// One line, without its CR LF, zero-based.
    private mutating func handleLine(_ text: UnsafeBufferPointer<UInt8>) throws(Failure) {
        switch self.state {
        case .statusLine:
            // HTTP/1.1 200 OK
            guard text.count >= 12, Self.hasPrefix(text, "HTTP/1."), text[8] == UInt8(ascii: " "),
                  let status = Self.number(text[9..<12]), status >= 100, status <= 999
            else {
                throw .malformed("the status line '\(Self.printable(text))' is not HTTP/1.x")
            }
            self.status = status
            if text[7] == UInt8(ascii: "0") { self.closes = true }  // HTTP/1.0 closes unless told otherwise
            self.state = .headers
        case .headers:
            if text.isEmpty {
                try self.headersDone()
                return
            }
            self.headerLines += 1
            guard self.headerLines <= Self.maxHeaderLines else {
                throw .malformed("more than \(Self.maxHeaderLines) header lines")
            }
            guard let colon = Self.index(of: UInt8(ascii: ":"), in: text, from: 0) else {
                throw .malformed("the header line '\(Self.printable(text))' has no colon")
            }
            let name = text[..<colon]
            var value = text[(colon + 1)...]
            while let first = value.first, first == 32 || first == 9 { value = value.dropFirst() }
            while let last = value.last, last == 32 || last == 9 { value = value.dropLast() }
            if Self.equalsIgnoringCase(name, "content-length") {
                guard let length = Self.number64(value) else {
                    throw .malformed("Content-Length '\(Self.printable(value))' is not a number")
                }
                if let existing = self.contentLength, existing != length {
                    throw .malformed("two different Content-Length headers")
                }
                self.contentLength = length
            } else if Self.equalsIgnoringCase(name, "transfer-encoding") {
                if Self.containsIgnoringCase(value, "chunked") { self.chunked = true }
            } else if Self.equalsIgnoringCase(name, "connection") {
                if Self.containsIgnoringCase(value, "close") { self.closes = true }
                if Self.containsIgnoringCase(value, "keep-alive") { self.closes = false }
            } else if Self.equalsIgnoringCase(name, "location") {
                self.location = String(decoding: value, as: UTF8.self)
            }
        case .chunkSize:
            var digits = text[...]
            if let semicolon = digits.firstIndex(of: UInt8(ascii: ";")) { digits = digits[..<semicolon] }
            while let last = digits.last, last == 32 || last == 9 { digits = digits.dropLast() }
            guard let size = Self.hex(digits) else {
                throw .malformed("the chunk size '\(Self.printable(text))' is not hexadecimal")
            }
            self.state = size == 0 ? .trailers : .chunkData(remaining: size)
        case .chunkDataEnd:
            guard text.isEmpty else { throw .malformed("a chunk is not followed by CRLF") }
            self.state = .chunkSize
        case .trailers:
            if text.isEmpty { self.state = .done }
        default:
            break
        }
    }

    private mutating func headersDone() throws(Failure) {
        if (100...199).contains(self.status) {
            // An interim response (100 Continue, 103 Early Hints): the real one follows.
            self.status = 0
            self.headerLines = 0
            self.contentLength = nil
            self.chunked = false
            self.location = nil
            self.state = .statusLine
            return
        }
        if self.isHead || self.status == 204 || self.status == 304 {
            self.state = .done
        } else if self.chunked {
            self.state = .chunkSize
        } else if let length = self.contentLength {
            self.state = length == 0 ? .done : .fixedBody(remaining: length)
        } else {
            self.closes = true
            self.state = .untilClose
        }
    }

    // MARK: - Byte helpers (over the line where it lies: no copies, no allocations)

    typealias Bytes = Slice<UnsafeBufferPointer<UInt8>>

    static func number(_ digits: Bytes) -> Int? {
        var value = 0
        for d in digits {
            guard d >= 48, d <= 57 else { return nil }
            value = value * 10 + Int(d - 48)
        }
        return digits.isEmpty ? nil : value
    }

    static func number64(_ digits: Bytes) -> UInt64? {
        guard !digits.isEmpty, digits.count <= 19 else { return nil }
        var value: UInt64 = 0
        for d in digits {
            guard d >= 48, d <= 57 else { return nil }
            value = value * 10 + UInt64(d - 48)
        }
        return value
    }

    static func hex(_ digits: Bytes) -> UInt64? {
        guard !digits.isEmpty, digits.count <= 15 else { return nil }
        var value: UInt64 = 0
        for d in digits {
            let v: UInt8
            switch d {
            case 48...57: v = d - 48
            case 65...70: v = d - 55
            case 97...102: v = d - 87
            default: return nil
            }
            value = value << 4 | UInt64(v)
        }
        return value
    }

    static func hasPrefix(_ bytes: UnsafeBufferPointer<UInt8>, _ prefix: StaticString) -> Bool {
        prefix.withUTF8Buffer { p in bytes.count >= p.count && zip(bytes, p).allSatisfy { $0 == $1 } }
    }

    @inline(__always)
    static func lowered(_ byte: UInt8) -> UInt8 { byte >= 65 && byte <= 90 ? byte | 0x20 : byte }

    static func equalsIgnoringCase(_ bytes: Bytes, _ lower: StaticString) -> Bool {
        guard bytes.count == lower.utf8CodeUnitCount else { return false }
        return lower.withUTF8Buffer { target in zip(bytes, target).allSatisfy { Self.lowered($0) == $1 } }
    }

    static func containsIgnoringCase(_ bytes: Bytes, _ lower: StaticString) -> Bool {
        lower.withUTF8Buffer { target in
            let n = target.count
            guard bytes.count >= n else { return false }
            var start = bytes.startIndex
            while start <= bytes.endIndex - n {
                var k = 0
                while k < n, Self.lowered(bytes[start + k]) == target[k] { k += 1 }
                if k == n { return true }
                start += 1
            }
            return false
        }
    }

    static func printable(_ bytes: some Collection<UInt8>) -> String {
        String(decoding: bytes.prefix(80).map { $0 >= 32 && $0 < 127 ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
    }
}
