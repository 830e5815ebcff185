import Glibc

/// An http or https URL, split into the parts a request needs. Parsing is strict: anything loadgen could not
/// send exactly as written is refused before a run starts.
public struct TargetURL: Hashable, Sendable, CustomStringConvertible {
    public var isTLS: Bool
    /// Host name or address, without brackets for IPv6.
    public var host: String
    public var port: Int
    /// Path and query, starting with `/`.
    public var pathAndQuery: String

    public var scheme: String { self.isTLS ? "https" : "http" }

    /// Whether `host` is an IPv4 or IPv6 address rather than a name: TLS then checks the certificate's IP
    /// subjectAltName and sends no server name.
    public static func isAddressLiteral(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }

    /// Whether a connection to one serves the other (same scheme, host and port), compared without building text.
    public func sameOrigin(as other: TargetURL) -> Bool {
        self.isTLS == other.isTLS && self.port == other.port && self.host == other.host
    }

    /// The `Host` header value.
    public var hostHeader: String {
        let h = self.host.contains(":") ? "[\(self.host)]" : self.host
        return self.port == (self.isTLS ? 443 : 80) ? h : "\(h):\(self.port)"
    }

    public var description: String { "\(self.scheme)://\(self.hostHeader)\(self.pathAndQuery)" }

    public init(isTLS: Bool, host: String, port: Int, pathAndQuery: String) {
        self.isTLS = isTLS
        self.host = host
        self.port = port
        self.pathAndQuery = pathAndQuery
    }

    /// Parses an absolute http(s) URL, naming the URL in the error.
    public static func parse(_ text: String) throws(LoadgenError) -> TargetURL {
        guard text.utf8.count <= RunRequest.Limits.maxURLBytes else {
            throw .usage("The URL '\(text.prefix(60))...' is longer than \(RunRequest.Limits.maxURLBytes) bytes.")
        }
        guard let schemeEnd = text.range(of: "://") else {
            throw .usage("'\(text)' is not a URL: give an http:// or https:// URL.")
        }
        let scheme = text[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "http" || scheme == "https" else {
            throw .usage("The URL '\(text)' uses the scheme '\(scheme)'; loadgen fetches only http and https URLs.")
        }
        let isTLS = scheme == "https"
        guard text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw .usage("The URL '\(text)' holds spaces, control or non-ASCII characters; percent-encode them.")
        }
        let rest = text[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        var path = String(rest[authorityEnd...])
        if let fragment = path.firstIndex(of: "#") { path = String(path[..<fragment]) }
        if path.isEmpty || path.hasPrefix("?") { path = "/" + path }
        guard !authority.contains("@") else {
            throw .usage("The URL '\(text)' carries user information; loadgen does not send credentials in URLs.")
        }
        var host: Substring
        var port = isTLS ? 443 : 80
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw .usage("The URL '\(text)' has an unclosed IPv6 address.")
            }
            host = authority[authority.index(after: authority.startIndex)..<close]
            authority = authority[authority.index(after: close)...]
            if !authority.isEmpty {
                guard authority.hasPrefix(":") else { throw .usage("The URL '\(text)' has a malformed host.") }
                port = try parsePort(authority.dropFirst(), url: text)
            }
        } else {
            if let colon = authority.lastIndex(of: ":") {
                host = authority[..<colon]
                port = try parsePort(authority[authority.index(after: colon)...], url: text)
            } else {
                host = authority
            }
        }
        guard !host.isEmpty else { throw .usage("The URL '\(text)' has no host.") }
        guard host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == ":" || $0 == "_" }) else {
            throw .usage("The URL '\(text)' has a malformed host '\(host)'.")
        }
        return TargetURL(isTLS: isTLS, host: host.lowercased(), port: port, pathAndQuery: path)
    }

    private static func parsePort(_ text: Substring, url: String) throws(LoadgenError) -> Int {
        guard !text.isEmpty, text.allSatisfy({ $0.isASCII && $0.isNumber }), let port = Int(text), port >= 1, port <= 65535 else {
            throw .usage("The URL '\(url)' has the port '\(text)'; a port is a number from 1 to 65535.")
        }
        return port
    }

    /// Resolves a `Location` header against this URL (absolute URLs, absolute paths, and relative paths).
    public func resolving(location: String) throws(LoadgenError) -> TargetURL {
        if location.contains("://") { return try TargetURL.parse(location) }
        if location.hasPrefix("//") { return try TargetURL.parse("\(self.scheme):\(location)") }
        var copy = self
        if location.hasPrefix("/") {
            copy.pathAndQuery = location
        } else {
            let base = self.pathAndQuery.split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
            let dir = base.lastIndex(of: "/").map { String(base[...$0]) } ?? "/"
            copy.pathAndQuery = dir + location
        }
        guard copy.pathAndQuery.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw .protocolViolation("The redirect location '\(location)' holds characters that are not allowed in a URL.")
        }
        return copy
    }
}
