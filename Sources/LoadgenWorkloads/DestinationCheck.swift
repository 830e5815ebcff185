import Glibc
import LoadgenCore
import NIOCore
import NIOPosix

/// The agent's destination policy applied where fetches connect: to a URL list before a run is prepared, to the
/// blocking client's resolved addresses, and to NIO's connections through ``PolicyResolver``.
public enum DestinationCheck {
    /// One resolved address: its family and its `sockaddr_in` or `sockaddr_in6`, as raw bytes.
    typealias Resolved = (family: Int32, address: [UInt8])

    /// getaddrinfo for TCP: every address `host` resolves to (in the resolver's order), or a dns failure with the
    /// resolver's reason.
    static func lookup(_ host: String, port: Int, family: Int32 = AF_UNSPEC) -> Result<[Resolved], FetchFailure> {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = family
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &result)
        guard status == 0, let first = result else {
            return .failure(FetchFailure(.dns, "resolving \(host) failed: \(String(cString: gai_strerror(status)))"))
        }
        defer { freeaddrinfo(result) }
        var out: [Resolved] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            out.append((info.pointee.ai_family, Array(UnsafeRawBufferPointer(start: info.pointee.ai_addr, count: Int(info.pointee.ai_addrlen)))))
            cursor = info.pointee.ai_next
        }
        return .success(out)
    }

    /// The IP address bytes (4 or 16) inside a `sockaddr_in` or `sockaddr_in6`, given as raw bytes.
    static func addressBytes(of entry: Resolved) -> [UInt8]? {
        switch entry.family {
        case AF_INET where entry.address.count >= MemoryLayout<sockaddr_in>.size: Array(entry.address[4..<8])
        case AF_INET6 where entry.address.count >= MemoryLayout<sockaddr_in6>.size: Array(entry.address[8..<24])
        default: nil
        }
    }

    /// The resolved addresses the policy allows for `host`, and the first refusal met (nil when none was refused).
    static func allowed(_ entries: [Resolved], host: String, policy: DestinationPolicy) -> (allowed: [Resolved], refusal: String?) {
        var refusal: String?
        let allowed = entries.filter { entry in
            guard let bytes = Self.addressBytes(of: entry) else { return false }
            guard let why = policy.refusal(host: host, address: bytes) else { return true }
            refusal = refusal ?? why
            return false
        }
        return (allowed, refusal)
    }

    /// Every address `host` resolves to now (both families), or nil when it does not resolve.
    public static func resolveAll(_ host: String) -> [[UInt8]]? {
        if let literal = CIDR.parseAddress(host) { return [literal] }
        guard case .success(let entries) = Self.lookup(host, port: 0) else { return nil }
        var out: [[UInt8]] = []
        for bytes in entries.compactMap(Self.addressBytes(of:)) where !out.contains(bytes) { out.append(bytes) }
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
            // A failed lookup is an empty answer, as NIO's own resolver gives for a family with no addresses.
            guard case .success(let entries) = DestinationCheck.lookup(host, port: port, family: family) else { return [] }
            let (allowed, refusal) = DestinationCheck.allowed(entries, host: host, policy: policy)
            if allowed.isEmpty, let refusal { throw Refused(description: refusal) }
            return try allowed.compactMap(DestinationCheck.addressBytes(of:)).map { bytes in
                try SocketAddress(packedIPAddress: ByteBuffer(bytes: bytes), port: port)
            }
        }
    }
}
