import Foundation

/// An HTTP request method: an upper-case token (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, or any other the
/// server knows, as vegeta's targets format allows).
public struct HTTPMethod: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
    public let rawValue: String

    public static let get = HTTPMethod(trusted: "GET")
    public static let head = HTTPMethod(trusted: "HEAD")
    public static let post = HTTPMethod(trusted: "POST")
    public static let put = HTTPMethod(trusted: "PUT")
    public static let patch = HTTPMethod(trusted: "PATCH")
    public static let delete = HTTPMethod(trusted: "DELETE")
    public static let options = HTTPMethod(trusted: "OPTIONS")

    /// The methods `--method` names in its help.
    public static let common: [HTTPMethod] = [.get, .head, .post, .put, .patch, .delete, .options]

    /// 1 to 20 upper-case ASCII letters; nil otherwise.
    public init?(rawValue: String) {
        guard (1...20).contains(rawValue.utf8.count), rawValue.utf8.allSatisfy({ $0 >= 65 && $0 <= 90 }) else { return nil }
        self.rawValue = rawValue
    }

    private init(trusted: String) { self.rawValue = trusted }

    public var description: String { self.rawValue }

    public init(from decoder: any Decoder) throws {
        let text = try String(from: decoder)
        guard let method = HTTPMethod(rawValue: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "'\(text)' is not an HTTP method (upper-case letters)."))
        }
        self = method
    }

    public func encode(to encoder: any Encoder) throws { try self.rawValue.encode(to: encoder) }
}

/// One request header as the user gave it (the name's case is kept: some servers under test care).
public struct HTTPHeader: Hashable, Sendable, Codable, CustomStringConvertible {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }

    public var description: String { "\(self.name): \(self.value)" }

    /// Headers loadgen writes itself from the request: a user's would contradict the framing.
    static let framing: Set<String> = ["content-length", "transfer-encoding"]
    /// Headers whose values are secrets: kept out of reports and the store.
    public static let secret: Set<String> = ["authorization", "proxy-authorization", "cookie"]
    public static let maxBytes = 8192
    public static let maxCount = 100

    /// Parses `Name: value` (the form of `--header` and of a targets file), naming the text when it is not one.
    public static func parse(_ text: String) throws(LoadgenError) -> HTTPHeader {
        guard let colon = text.firstIndex(of: ":") else {
            throw .usage("The header '\(text)' is not of the form 'Name: value'.")
        }
        let header = HTTPHeader(name: String(text[..<colon]).trimmingWhitespace(),
                                value: String(text[text.index(after: colon)...]).trimmingWhitespace())
        try header.validate()
        return header
    }

    /// A token for a name, no CR, LF or NUL in the value (they would let a header smuggle another request), and no
    /// Content-Length or Transfer-Encoding (loadgen frames the body itself).
    public func validate() throws(LoadgenError) {
        guard !self.name.isEmpty, self.name.utf8.allSatisfy(Self.isTokenByte) else {
            throw .usage("The header name '\(self.name)' is not an HTTP token (letters, digits and !#$%&'*+-.^_`|~).")
        }
        guard self.value.utf8.allSatisfy({ $0 == 9 || ($0 >= 32 && $0 != 127) }) else {
            throw .usage("The value of the header '\(self.name)' holds a control character (CR, LF, NUL...).")
        }
        guard self.name.utf8.count + self.value.utf8.count <= Self.maxBytes else {
            throw .usage("The header '\(self.name)' is longer than \(Self.maxBytes) bytes.")
        }
        guard !Self.framing.contains(self.name.lowercased()) else {
            throw .usage("The header '\(self.name)' is loadgen's to write (it frames the body itself): leave it out.")
        }
    }

    /// RFC 9110's tchar: a letter, a digit or one of !#$%&'*+-.^_`|~.
    @inlinable
    public static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
             UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"): true
        default: false
        }
    }

    /// HTTP/1.1's connection management, which HTTP/2 forbids in either direction (RFC 9113 8.2.2); `name` lower-case.
    /// A switch of short string compares: it runs on every header of every HTTP/2 response.
    @inlinable
    public static func isHTTP2ConnectionSpecific(_ name: String) -> Bool {
        switch name {
        case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade": true
        default: false
        }
    }

    /// The header with its value hidden when it is a secret.
    public var redacted: HTTPHeader {
        Self.secret.contains(self.name.lowercased()) ? HTTPHeader(name: self.name, value: "(redacted)") : self
    }
}

/// A request body: the bytes of a file, sent as they are with a Content-Length.
public struct RequestBody: Hashable, Sendable, Codable {
    /// The file it was read from, as given.
    public var file: String
    public var size: Int
    /// The bytes (base64 on the wire); nil in stored reports, which keep only the file and size.
    public var data: Data?

    public init(file: String, data: Data) {
        self.file = file
        self.size = data.count
        self.data = data
    }

    /// Bodies of one run, together, at most this (they travel in the run request's frame).
    public static let maxTotalBytes = 512 * 1024

    /// Reads a body file, naming it when it cannot be read or is too big.
    public static func read(_ path: String) throws(LoadgenError) -> RequestBody {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw .usage("The body file '\(path)' cannot be read: \((error as NSError).localizedDescription)")
        }
        guard data.count <= Self.maxTotalBytes else {
            throw .usage("The body file '\(path)' holds \(data.count) bytes, more than loadgen's limit of \(Self.maxTotalBytes) for a run's bodies.")
        }
        return RequestBody(file: path, data: data)
    }
}

/// What one entry of a targets file adds to its URL: its own method, headers and body.
public struct RequestTarget: Hashable, Sendable, Codable {
    /// Nil: the run's `--method`.
    public var method: HTTPMethod?
    /// Sent after the run's `--header`s.
    public var headers: [HTTPHeader]
    /// An index into the run's bodies; nil: the run's `--body-file`, if any.
    public var body: Int?

    public init(method: HTTPMethod? = nil, headers: [HTTPHeader] = [], body: Int? = nil) {
        self.method = method
        self.headers = headers
        self.body = body
    }
}

/// The statuses `--expect-status` accepts: codes and classes, `200,201` or `2xx` or `2xx,304`.
public struct StatusExpectation: Hashable, Sendable {
    /// Bit `code - 100` of the words is set for an accepted code (100 to 999).
    private var words = [UInt64](repeating: 0, count: 15)
    public let text: String

    public init(parsing text: String) throws(LoadgenError) {
        self.text = text
        let items = text.split(separator: ",", omittingEmptySubsequences: false).map { String($0).trimmingWhitespace().lowercased() }
        guard !items.isEmpty, !items.contains("") else {
            throw .usage("The status list '\(text)' is empty or has an empty item: give codes and classes such as 200,201 or 2xx.")
        }
        for item in items {
            if item.count == 3, item.hasSuffix("xx"), let digit = Int(item.prefix(1)), (1...9).contains(digit) {
                for code in (digit * 100)..<(digit * 100 + 100) { self.insert(code) }
            } else if item.count == 3, item.allSatisfy({ $0.isASCII && $0.isNumber }), let code = Int(item), code >= 100 {
                self.insert(code)
            } else {
                throw .usage("The status '\(item)' in '\(text)' is neither a code from 100 to 999 nor a class such as 2xx.")
            }
        }
    }

    private mutating func insert(_ code: Int) {
        let bit = code - 100
        self.words[bit >> 6] |= 1 << UInt64(bit & 63)
    }

    @inline(__always)
    public func accepts(_ status: Int) -> Bool {
        guard status >= 100, status <= 999 else { return false }
        let bit = status - 100
        return self.words[bit >> 6] & (1 << UInt64(bit & 63)) != 0
    }
}

/// `--expect-body TEXT`: a search for TEXT in the first 64 KiB of each response body as it streams past (the body
/// is never kept): Knuth-Morris-Pratt, so a match split across reads is found and each byte is looked at once.
public struct BodyExpectation: Hashable, Sendable {
    public let needle: [UInt8]
    /// The KMP failure function of the needle.
    let fallback: [Int]
    /// How much of each body is searched.
    public static let window = 64 * 1024
    public static let maxNeedleBytes = 4096

    public init(_ text: String) throws(LoadgenError) {
        let needle = Array(text.utf8)
        guard !needle.isEmpty else { throw .usage("--expect-body needs some text to look for.") }
        guard needle.count <= Self.maxNeedleBytes else {
            throw .usage("--expect-body's text is \(needle.count) bytes, more than the limit of \(Self.maxNeedleBytes).")
        }
        self.needle = needle
        var fallback = [Int](repeating: 0, count: needle.count)
        var k = 0
        for i in 1..<max(1, needle.count) where needle.count > 1 {
            while k > 0, needle[i] != needle[k] { k = fallback[k - 1] }
            if needle[i] == needle[k] { k += 1 }
            fallback[i] = k
        }
        self.fallback = fallback
    }

    /// The search's progress through one body.
    public struct Progress: Hashable, Sendable {
        /// Needle bytes matched so far.
        var matched = 0
        /// Body bytes looked at.
        var scanned = 0
        public internal(set) var found = false
        public init() {}
    }

    /// Looks at the next body bytes (those past the window are ignored).
    public func scan(_ bytes: UnsafeBufferPointer<UInt8>, _ progress: inout Progress) {
        guard !progress.found, progress.scanned < Self.window else { return }
        let count = min(bytes.count, Self.window - progress.scanned)
        progress.scanned += count
        var k = progress.matched
        let n = self.needle.count
        self.needle.withUnsafeBufferPointer { needle in
            self.fallback.withUnsafeBufferPointer { fallback in
                for i in 0..<count {
                    let byte = bytes[i]
                    while k > 0, needle[k] != byte { k = fallback[k - 1] }
                    if needle[k] == byte { k += 1 }
                    if k == n {
                        progress.found = true
                        return
                    }
                }
            }
        }
        progress.matched = k
    }
}

/// One request as it is sent: method, the user's headers, a body; made into bytes once per target.
public struct RequestBlueprint: Hashable, Sendable {
    public var method: HTTPMethod
    public var headers: [HTTPHeader]
    public var body: [UInt8]?
    /// `--no-keepalive`: ask the server to close, and close after the response.
    public var closes: Bool

    public init(method: HTTPMethod, headers: [HTTPHeader] = [], body: [UInt8]? = nil, closes: Bool = false) {
        self.method = method
        self.headers = headers
        self.body = body
        self.closes = closes
    }

    public var isHead: Bool { self.method == .head }

    /// Safe to send again when a reused connection died before any response byte (Go's rule).
    public var isReplayable: Bool {
        self.body == nil && (self.method == .get || self.method == .head || self.method == .options)
    }

    /// The request's bytes for `target`: the request line, Host, User-Agent and Accept unless the user gave them,
    /// the user's headers as given, Content-Length with a body (or for a POST, PUT or PATCH without one), and the body.
    public func bytes(for target: TargetURL) -> [UInt8] {
        var given = Set<String>()
        for header in self.headers { given.insert(header.name.lowercased()) }
        var text = "\(self.method.rawValue) \(target.pathAndQuery) HTTP/1.1\r\n"
        if !given.contains("host") { text += "Host: \(target.hostHeader)\r\n" }
        if !given.contains("user-agent") { text += "User-Agent: loadgen\r\n" }
        if !given.contains("accept") { text += "Accept: */*\r\n" }
        for header in self.headers { text += "\(header.name): \(header.value)\r\n" }
        if let body = self.body {
            text += "Content-Length: \(body.count)\r\n"
        } else if self.method == .post || self.method == .put || self.method == .patch {
            text += "Content-Length: 0\r\n"
        }
        if self.closes, !given.contains("connection") { text += "Connection: close\r\n" }
        text += "\r\n"
        var bytes = Array(text.utf8)
        if let body = self.body { bytes += body }
        return bytes
    }

    /// What a redirect to `next` sends (the rules of Go's client, which vegeta and hey use): 301, 302 and 303 turn
    /// any method but GET and HEAD into a GET without a body; 307 and 308 repeat the request as it was. Credentials
    /// (Authorization, Cookie) are not carried to another host.
    public func redirected(status: Int, from target: TargetURL, to next: TargetURL) -> RequestBlueprint {
        var copy = self
        if status != 307, status != 308, self.method != .get, self.method != .head {
            copy.method = .get
            copy.body = nil
        }
        if next.host != target.host {
            copy.headers.removeAll { HTTPHeader.secret.contains($0.name.lowercased()) }
        }
        return copy
    }
}
