import Foundation
import LoadgenCore

/// `HOST:PORT` (IPv6 as `[::1]:7420`); the port defaults to 7420.
public struct AgentAddress: Hashable, Sendable, CustomStringConvertible {
    public static let defaultPort = 7420
    public var host: String
    public var port: Int
    /// The name `host` was resolved from (`--agents-dns`), which a TLS certificate names instead of the address.
    public var name: String?

    public init(host: String, port: Int, name: String? = nil) {
        self.host = host
        self.port = port
        self.name = name
    }

    public var description: String { self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)" }

    public static func parse(_ text: String, defaultPort: Int = AgentAddress.defaultPort) throws(LoadgenError) -> AgentAddress {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        var host = trimmed
        var port = defaultPort
        if trimmed.hasPrefix("[") {
            guard let close = trimmed.firstIndex(of: "]") else { throw .usage("The address '\(text)' has an unclosed IPv6 bracket.") }
            host = String(trimmed[trimmed.index(after: trimmed.startIndex)..<close])
            let rest = trimmed[trimmed.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()) else { throw .usage("The address '\(text)' has a malformed port.") }
                port = p
            }
        } else if let colon = trimmed.lastIndex(of: ":"), trimmed.firstIndex(of: ":") == colon {
            host = String(trimmed[..<colon])
            guard let p = Int(trimmed[trimmed.index(after: colon)...]) else {
                throw .usage("The address '\(text)' has the port '\(trimmed[trimmed.index(after: colon)...])'; a port is a number from 0 to 65535.")
            }
            port = p
        }
        guard !host.isEmpty else { throw .usage("The address '\(text)' has no host.") }
        guard (0...65535).contains(port) else { throw .usage("The address '\(text)' has the port \(port); a port is a number from 0 to 65535.") }
        return AgentAddress(host: host, port: port)
    }

    /// Whether the host is a loopback address (127.0.0.0/8, ::1, localhost), where an agent may run without a secret.
    public var isLoopback: Bool {
        if self.host == "localhost" || self.host == "::1" { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, self.host, &v4) == 1 {
            return UInt32(bigEndian: v4.s_addr) >> 24 == 127
        }
        return false
    }
}
