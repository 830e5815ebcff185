import Logging
import LoadgenCore
import LoadgenWire
import NIOCore
import NIOPosix
import Synchronization

/// `loadgen agent`: listens for coordinators and serves each connection with an ``AgentSession``.
///
/// One connection cannot take the server down: each is handled in a discarding task group and catches its own
/// errors. Unauthenticated connections are capped, and failed handshakes are slowed per source address, so a
/// flood or a brute-force attempt costs the attacker time and the agent little.
public struct AgentServer: Sendable {
    public let configuration: AgentConfiguration
    public let host: String
    public let port: Int
    public let logger: Logger
    public let slot = AgentRunSlot()
    /// Connections that have not finished their handshake, at most (sshd's `MaxStartups` full).
    public var maxPendingConnections = 32
    /// Of those, from one source address at most: one address holding many silent connections leaves room for
    /// coordinators elsewhere.
    public var maxPendingPerAddress = 8
    /// From this many pending connections (default: half the cap) a new one is dropped at random with probability
    /// ``earlyDropRate``, rising linearly to 1 at the cap (sshd's `MaxStartups start:rate:full`).
    public var earlyDropStart: Int?
    public var earlyDropRate = 0.3
    /// A source address with this many failed handshakes within ``failedHandshakeWindowNanos`` is refused at once.
    public var maxFailedHandshakes = 5
    public var failedHandshakeWindowNanos: UInt64 = 1_000_000_000
    /// Mutual TLS on every connection (nil: plain TCP).
    public var tls: ControlTLS?
    /// The id was not given: on a port other than the default it gets the bound port appended
    /// (`host-7421`), so several agents on one host need no `--id`.
    public var idIncludesPort = false

    public init(configuration: AgentConfiguration, host: String, port: Int, logger: Logger) {
        self.configuration = configuration
        self.host = host
        self.port = port
        self.logger = logger
    }

    /// The agent id used on a bound port: the configured one, with the port when ``idIncludesPort`` and the port
    /// is not the default.
    public func agentID(onPort port: Int) -> String {
        guard self.idIncludesPort, port != AgentAddress.defaultPort else { return self.configuration.agentID }
        return "\(self.configuration.agentID)-\(port)"
    }

    /// Listens until cancelled; `onListening` receives the bound address (port 0 picks a free port) and the agent
    /// id it serves under.
    public func run(onListening: @Sendable (SocketAddress, String) -> Void = { _, _ in }) async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .bind(host: self.host, port: self.port) { [tls] channel in
                channel.eventLoop.makeCompletedFuture {
                    try tls?.addHandler(to: channel.pipeline.syncOperations)
                    try channel.pipeline.syncOperations.addWireCodec()
                    return try NIOAsyncChannel<WireMessage, WireMessage>(wrappingChannelSynchronously: channel)
                }
            }
        guard let address = server.channel.localAddress else { return }
        var bound = self.configuration
        bound.agentID = self.agentID(onPort: address.port ?? self.port)
        let configuration = bound
        onListening(address, configuration.agentID)
        self.logger.info("Agent listening", metadata: ["agent.id": "\(configuration.agentID)",
                                                       "listen.address": "\(address.ipAddress ?? self.host):\(address.port ?? 0)"])
        let gate = Locked(ConnectionGate(limits: .init(
            perAddress: self.maxPendingPerAddress, start: self.earlyDropStart ?? self.maxPendingConnections / 2,
            rate: self.earlyDropRate, full: self.maxPendingConnections)))
        let failures = Locked(FailureTable(limit: self.maxFailedHandshakes, windowNanos: self.failedHandshakeWindowNanos))
        try await withThrowingDiscardingTaskGroup { group in
            try await server.executeThenClose { inbound in
                for try await connection in inbound {
                    let peer = connection.channel.remoteAddress
                    let peerHost = peer?.ipAddress ?? "unknown"
                    let peerText = peer.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "unknown"
                    if failures.withLock({ $0.isBlocked(peerHost, nowNanos: MonotonicClock.nowNanos()) }) {
                        self.logger.info("Connection refused: address blocked after failed handshakes", metadata: ["peer.address": "\(peerText)"])
                        let sentence = "Agent \(configuration.agentID) refuses \(peerHost) for now: \(self.maxFailedHandshakes) handshake\(self.maxFailedHandshakes == 1 ? "" : "s") from it failed within \(DurationText.format(nanos: self.failedHandshakeWindowNanos)). Check that the coordinator's --secret-file (and TLS files) match the agent's, and try again after that long."
                        group.addTask { await Self.refuse(connection, sentence) }
                        continue
                    }
                    if let refusal = gate.withLock({ $0.admit(peerHost, draw: Double.random(in: 0..<1)) }) {
                        let sentence: String
                        switch refusal {
                        case .addressFull(let most):
                            sentence = "Agent \(configuration.agentID) has \(most) connections from \(peerHost) still in their handshake, the most it takes from one address; try again shortly (many connections from one address that never finish a handshake look like a flood)."
                        case .full(let most):
                            sentence = "Agent \(configuration.agentID) has \(most) connections still in their handshake, its limit; try again shortly (many clients connecting without finishing a handshake look like a flood)."
                        case .earlyDrop(let pending):
                            sentence = "Agent \(configuration.agentID) has \(pending) connections still in their handshake and sheds new ones at random as it nears its limit of \(self.maxPendingConnections); try again shortly."
                        }
                        self.logger.info("Connection refused: too many pending connections", metadata: [
                            "peer.address": "\(peerText)", "refusal": "\(refusal)"])
                        group.addTask { await Self.refuse(connection, sentence) }
                        continue
                    }
                    group.addTask {
                        await self.serve(connection, configuration: configuration, peer: peerText, gate: gate,
                                         failures: failures, peerHost: peerHost)
                    }
                }
            }
        }
    }

    /// Tells a refused connection why in one `error` frame, then closes it (within a second whatever the peer does,
    /// so a refused flood holds nothing). The connection is not served: no session, no handshake.
    static func refuse(_ connection: NIOAsyncChannel<WireMessage, WireMessage>, _ sentence: String) async {
        let channel = connection.channel
        let deadline = channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
        try? await connection.executeThenClose { _, outbound in
            try await outbound.write(.failure(.init(code: .unreachable, message: sentence)))
        }
        deadline.cancel()
    }

    private func serve(_ connection: NIOAsyncChannel<WireMessage, WireMessage>, configuration: AgentConfiguration,
                       peer: String, gate: Locked<ConnectionGate>, failures: Locked<FailureTable>, peerHost: String) async {
        let session = AgentSession(configuration: configuration, slot: self.slot, peer: peer)
        let logger = self.logger
        logger.debug("Connection accepted", metadata: ["peer.address": "\(peer)"])
        let authenticated = Locked(false)
        let settled = Locked(false)
        /// Whether the peer sent anything (a frame, or bytes that broke the protocol or TLS): a connection that
        /// closes without a word is a health probe, not a failed handshake.
        let spoke = Locked(false)
        /// Leaves the pending count once: on authentication, or on the handshake's failure or end.
        @Sendable func settle(failed: Bool) {
            guard settled.withLock({ done in defer { done = true }; return !done }) else { return }
            gate.withLock { $0.release(peerHost) }
            if failed { failures.withLock { $0.recordFailure(peerHost, nowNanos: MonotonicClock.nowNanos()) } }
        }
        do {
            try await connection.executeThenClose { inbound, outbound in
                let (stream, continuation) = AsyncStream.makeStream(of: WireMessage.self)
                await withDiscardingTaskGroup { group in
                    group.addTask {
                        do {
                            for try await message in inbound {
                                if !spoke.value { spoke.withLock { $0 = true } }
                                continuation.yield(message)
                            }
                        } catch {
                            spoke.withLock { $0 = true }
                            let text = (error as? LoadgenError)?.message ?? "\(error)"
                            logger.info("Connection broke the protocol", metadata: ["peer.address": "\(peer)", "error": "\(text)"])
                            try? await outbound.write(.failure(.init(code: .protocolViolation, message: text)))
                        }
                        continuation.finish()
                    }
                    await session.run(inbound: stream, send: { message in
                        switch message {
                        case .ready:
                            authenticated.withLock { $0 = true }
                            settle(failed: false)
                            logger.info("Coordinator connected", metadata: ["peer.address": "\(peer)"])
                        case .failure where !authenticated.value:
                            // Counted the moment it fails, so a fast retry loop meets the limits at once.
                            settle(failed: true)
                        default:
                            break
                        }
                        do {
                            try await outbound.write(message)
                            return true
                        } catch {
                            return false
                        }
                    }, close: {
                        connection.channel.close(promise: nil)
                    })
                    connection.channel.close(promise: nil)
                }
            }
        } catch {
            logger.debug("Connection ended with an error", metadata: ["peer.address": "\(peer)", "error": "\(error)"])
        }
        if authenticated.value {
            logger.info("Coordinator disconnected", metadata: ["peer.address": "\(peer)"])
        } else if spoke.value || settled.value {
            // It spoke and failed, or it was cut off at the handshake deadline (settled then, as failed).
            settle(failed: true)
            logger.info("Handshake failed", metadata: ["peer.address": "\(peer)"])
        } else {
            settle(failed: false)
            logger.debug("Connection closed without a word (a health probe?)", metadata: ["peer.address": "\(peer)"])
        }
    }
}
