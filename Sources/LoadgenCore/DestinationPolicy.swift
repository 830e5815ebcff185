#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 network, `ADDRESS/BITS` (a bare address is a /32 or /128).
public struct CIDR: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The network's address bytes (4 or 16), host bits cleared.
    public let bytes: [UInt8]
    public let prefix: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = CIDR.parseAddress(String(parts[0])) else { return nil }
        let bits = address.count * 8
        var prefix = bits
        if parts.count == 2 {
            guard let p = Int(parts[1]), (0...bits).contains(p), parts[1].allSatisfy(\.isNumber) else { return nil }
            prefix = p
        }
        self.prefix = prefix
        self.bytes = CIDR.masked(address, prefix: prefix)
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let cidr = CIDR(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "'\(text)' is not a CIDR."))
        }
        self = cidr
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(self.description)
    }

    /// Whether `address` (4 or 16 bytes) lies in this network; an IPv4-mapped IPv6 address counts as its IPv4 one.
    public func contains(_ address: [UInt8]) -> Bool {
        let address = CIDR.unmapped(address)
        guard address.count == self.bytes.count else { return false }
        return CIDR.masked(address, prefix: self.prefix) == self.bytes
    }

    public var description: String {
        "\(CIDR.format(self.bytes))/\(self.prefix)"
    }

    /// The bytes of a numeric IPv4 or IPv6 address (brackets allowed around IPv6), or nil.
    public static func parseAddress(_ text: String) -> [UInt8]? {
        var text = text
        if text.hasPrefix("["), text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    /// An address as text (IPv4 dotted, IPv6 compressed).
    public static func format(_ bytes: [UInt8]) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        let ok = bytes.withUnsafeBytes { raw in inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) != nil }
        return ok ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
    }

    static func unmapped(_ address: [UInt8]) -> [UInt8] {
        if address.count == 16, address[0..<10].allSatisfy({ $0 == 0 }), address[10] == 0xff, address[11] == 0xff {
            return Array(address[12..<16])
        }
        return address
    }

    static func masked(_ address: [UInt8], prefix: Int) -> [UInt8] {
        address.enumerated().map { index, byte in
            let keep = max(0, min(8, prefix - index * 8))
            return keep == 8 ? byte : byte & UInt8(truncatingIfNeeded: 0xff << (8 - keep))
        }
    }
}

/// Where an agent's fetch runs may connect, checked on every address a host name resolves to, on every connection
/// and redirect (so a DNS answer that changes mid-run cannot get around it), and once for every URL before a run
/// is prepared.
///
/// - `--deny-cidr` refuses its networks, always.
/// - Link-local networks and the cloud metadata addresses (``defaultDenied``) are refused unless an `--allow-cidr`
///   covers the address.
/// - With any `--allow-host` or `--allow-cidr`, only what they allow is allowed: a host name matching an
///   `--allow-host` (exact, or `*.suffix` for names under it), or an address in an `--allow-cidr`.
/// - With neither, everything else is allowed.
public struct DestinationPolicy: Sendable, Hashable, Codable {
    /// Link-local (where cloud metadata services live) and the metadata addresses outside it.
    public static let defaultDenied: [CIDR] = [
        "169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32", "168.63.129.16/32",
    ].map { CIDR($0)! }

    public var allowHosts: [String]
    public var allowCIDRs: [CIDR]
    public var denyCIDRs: [CIDR]

    /// Camel case as FrameCodec's key strategy expects (`allow_cidrs` on the wire).
    enum CodingKeys: String, CodingKey {
        case allowHosts, allowCIDRs = "allowCidrs", denyCIDRs = "denyCidrs"
    }

    public init(allowHosts: [String] = [], allowCIDRs: [CIDR] = [], denyCIDRs: [CIDR] = []) {
        self.allowHosts = allowHosts.map { $0.lowercased() }
        self.allowCIDRs = allowCIDRs
        self.denyCIDRs = denyCIDRs
    }

    /// Checks a host pattern given to `--allow-host`; nil when it is fine, else the sentence.
    public static func problem(withHostPattern pattern: String) -> String? {
        let name = pattern.hasPrefix("*.") ? String(pattern.dropFirst(2)) : pattern
        let allowed = name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == ".") }
        guard !name.isEmpty, allowed, !name.hasPrefix("."), !name.contains("*") else {
            return "--allow-host '\(pattern)' is neither a host name nor *.suffix (say, api.internal or *.lab.example)."
        }
        return nil
    }

    /// Why connecting to `address` for `host` is refused (one sentence naming the address and the rule), or nil.
    public func refusal(host: String, address: [UInt8]) -> String? {
        let text = CIDR.format(CIDR.unmapped(address))
        let shown = CIDR.parseAddress(host) == nil ? "\(host) (\(text))" : text
        if let deny = self.denyCIDRs.first(where: { $0.contains(address) }) {
            return "\(shown) is in --deny-cidr \(deny)."
        }
        let opened = self.allowCIDRs.first { $0.contains(address) }
        if let fence = Self.defaultDenied.first(where: { $0.contains(address) }), opened == nil {
            return "\(shown) is in \(fence), refused by default (link-local and cloud metadata addresses); the agent's --allow-cidr \(text)/\(address.count == 4 ? 32 : 128) opens it."
        }
        if self.allowHosts.isEmpty, self.allowCIDRs.isEmpty { return nil }
        if opened != nil || self.allowsHost(host) { return nil }
        return "\(shown) is allowed by neither the agent's --allow-host (\(self.allowHosts.isEmpty ? "none" : self.allowHosts.joined(separator: ", "))) nor its --allow-cidr (\(self.allowCIDRs.isEmpty ? "none" : self.allowCIDRs.map(\.description).joined(separator: ", ")))."
    }

    func allowsHost(_ host: String) -> Bool {
        let name = host.lowercased().trimmingTrailingDot
        return self.allowHosts.contains { pattern in
            if pattern.hasPrefix("*.") { return name.hasSuffix(String(pattern.dropFirst(1))) }
            return name == pattern.trimmingTrailingDot
        }
    }
}

extension String {
    fileprivate var trimmingTrailingDot: String { self.hasSuffix(".") ? String(self.dropLast()) : self }
}
