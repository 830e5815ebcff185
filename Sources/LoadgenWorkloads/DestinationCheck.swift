import Glibc
import LoadgenCore
import NIOCore
import NIOPosix

/// The agent's destination policy applied where fetches connect: to a URL list before a run is prepared, to the
/// blocking client's resolved addresses, and to NIO's connections through ``PolicyResolver``.
public enum DestinationCheck {
    /// The IP address bytes (4 or 16) inside a `sockaddr_in` or `sockaddr_in6`, given as raw bytes.
    static func addressBytes(ofSockaddr raw: [UInt8], family: Int32) -> [UInt8]? {
        switch family {
        case AF_INET where raw.count >= MemoryLayout<sockaddr_in>.size: Array(raw[4..<8])
        case AF_INET6 where raw.count >= MemoryLayout<sockaddr_in6>.size: Array(raw[8..<24])
        default: nil
        }
    }

    /// Every address `host` resolves to now (both families), or nil when it does not resolve.
    public static func resolveAll(_ host: String) -> [[UInt8]]? {
        if let literal = CIDR.parseAddress(host) { return [literal] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let first = result else { return nil }
        defer { freeaddrinfo(result) }
        var out: [[UInt8]] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            let raw = Array(UnsafeRawBufferPointer(start: info.pointee.ai_addr, count: Int(info.pointee.ai_addrlen)))
            if let bytes = Self.addressBytes(ofSockaddr: raw, family: info.pointee.ai_family), !out.contains(bytes) {
                out.append(bytes)
            }
            cursor = info.pointee.ai_next
        }
        return out
    }

    /// Refuses a fetch request any of whose URLs resolves to an address the policy refuses, naming the URL, the
    /// address and the rule. A host that does not resolve now is left to the run (it counts dns errors).
    public static func check(_ spec: FetchSpec, policy: DestinationPolicy, agentID: String,
                             resolve: (String) -> [[UInt8]]? = DestinationCheck.resolveAll) throws(LoadgenError) {
        var seen: Set<String> = []
        for url in spec.urls {
            guard let target = try? TargetURL.parse(url), seen.insert(target.host).inserted else { continue }
            for address in resolve(target.host) ?? [] {
                if let refusal = policy.refusal(host: target.host, address: address) {
                    throw .policy("Agent \(agentID) does not fetch \(url): \(refusal)")
                }
            }
        }
    }
}

/// NIO's name resolution with the agent's destination policy applied: getaddrinfo on NIO's thread pool, each
/// family's answer filtered, and a query whose every address is refused fails with the refusal, so NIO never
/// connects to it (and a DNS answer that changes mid-run is checked afresh on every connection).
final class PolicyResolver: Resolver, @unchecked Sendable {
    /// Set when a query's every address was refused: the slot reports that rather than a connect error.
    struct Refused: Error, CustomStringConvertible {
        var description: String
    }

    private let loop: any EventLoop
    private let policy: DestinationPolicy

    init(loop: any EventLoop, policy: DestinationPolicy) {
        self.loop = loop
        self.policy = policy
    }

    func initiateAQuery(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> {
        self.query(host: host, port: port, family: AF_INET)
    }

    func initiateAAAAQuery(host: String, port: Int) -> EventLoopFuture<[SocketAddress]> {
        self.query(host: host, port: port, family: AF_INET6)
    }

    func cancelQueries() {}

    private func query(host: String, port: Int, family: Int32) -> EventLoopFuture<[SocketAddress]> {
        let policy = self.policy
        return NIOThreadPool.singleton.runIfActive(eventLoop: self.loop) { () throws -> [SocketAddress] in
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_family = family
            var result: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(host, String(port), &hints, &result) == 0, let first = result else { return [] }
            defer { freeaddrinfo(result) }
            var allowed: [SocketAddress] = []
            var refusal: String?
            var cursor: UnsafeMutablePointer<addrinfo>? = first
            while let info = cursor {
                cursor = info.pointee.ai_next
                let raw = Array(UnsafeRawBufferPointer(start: info.pointee.ai_addr, count: Int(info.pointee.ai_addrlen)))
                guard let bytes = DestinationCheck.addressBytes(ofSockaddr: raw, family: info.pointee.ai_family) else { continue }
                if let why = policy.refusal(host: host, address: bytes) {
                    refusal = refusal ?? why
                    continue
                }
                allowed.append(try SocketAddress(packedIPAddress: ByteBuffer(bytes: bytes), port: port))
            }
            if allowed.isEmpty, let refusal { throw Refused(description: refusal) }
            return allowed
        }
    }
}
