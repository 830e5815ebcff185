import LoadgenCore
import LoadgenWire
import NIOCore
import NIOPosix

/// A connection to an agent over TCP, carrying frames.
public final class RemoteAgentLink: AgentLink {
    public let address: String
    public let inbound: AsyncStream<WireMessage>
    /// Writes go straight into the channel's pipeline (the encoder), from any thread, in the order they are made:
    /// no task hop per message, which mattered with hundreds of agents' heartbeats.
    private let channel: any Channel
    private let closed: AsyncStream<Void>.Continuation
    private let reason = Locked<String?>(nil)
    private let heardFrom = Locked(false)

    init(address: String, inbound: AsyncStream<WireMessage>, channel: any Channel, closed: AsyncStream<Void>.Continuation) {
        self.address = address
        self.inbound = inbound
        self.channel = channel
        self.closed = closed
    }

    public func send(_ message: WireMessage) async -> Bool {
        guard self.channel.isActive else { return false }
        self.channel.writeAndFlush(message, promise: nil)
        return true
    }

    public func close() {
        self.closed.finish()
    }

    public var closeReason: String? {
        if let reason = self.reason.value { return reason }
        guard !self.heardFrom.value else { return nil }
        // An agent answers hello with welcome, and a refusal (too many pending connections, a blocked address, TLS
        // expected) with an error frame that says so: closing with no word at all is not a loadgen agent's doing.
        return "it sent nothing back: it may not be a loadgen agent, or it stopped"
    }

    /// Connects to every agent (all at once, each within `connectTimeoutNanos`), runs `body` with the links, and
    /// closes them after. An agent that cannot be reached refuses the whole request, naming it.
    public static func with<R: Sendable>(
        addresses: [AgentAddress], tls: ControlTLS? = nil, connectTimeoutNanos: UInt64 = 5_000_000_000,
        _ body: @Sendable ([any AgentLink]) async throws -> R
    ) async throws -> R {
        let channels = try await withThrowingTaskGroup(of: (Int, NIOAsyncChannel<WireMessage, WireMessage>).self) { group in
            for (index, address) in addresses.enumerated() {
                group.addTask {
                    do {
                        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                            .connectTimeout(.nanoseconds(Int64(connectTimeoutNanos)))
                            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                            // An interval with its histogram is ~10-20 KB: read it in one go rather than in 2 KB steps.
                            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(
                                minimum: 4096, initial: 32768, maximum: 262_144))
                            .connect(host: address.host, port: address.port) { channel in
                                channel.eventLoop.makeCompletedFuture {
                                    try tls?.addHandler(to: channel.pipeline.syncOperations, host: address.name ?? address.host)
                                    try channel.pipeline.syncOperations.addWireCodec()
                                    return try NIOAsyncChannel<WireMessage, WireMessage>(wrappingChannelSynchronously: channel)
                                }
                            }
                        return (index, channel)
                    } catch {
                        throw LoadgenError(.unreachable, "Agent \(address) cannot be reached: \(Self.describe(error)).")
                    }
                }
            }
            var channels: [NIOAsyncChannel<WireMessage, WireMessage>?] = Array(repeating: nil, count: addresses.count)
            do {
                for try await (index, channel) in group { channels[index] = channel }
            } catch {
                for channel in channels.compactMap({ $0 }) { try? await channel.channel.close() }
                throw error
            }
            return channels.map { $0! }
        }

        return try await withThrowingTaskGroup(of: Void.self) { group in
            var links: [RemoteAgentLink] = []
            for (address, channel) in zip(addresses, channels) {
                let (inbound, inboundContinuation) = AsyncStream.makeStream(of: WireMessage.self)
                let (closed, closedContinuation) = AsyncStream.makeStream(of: Void.self)
                let link = RemoteAgentLink(address: address.description, inbound: inbound, channel: channel.channel,
                                           closed: closedContinuation)
                links.append(link)
                group.addTask {
                    try? await channel.executeThenClose { channelInbound, _ in
                        await withTaskGroup(of: Void.self) { pair in
                            pair.addTask {
                                var heard = false
                                do {
                                    for try await message in channelInbound {
                                        if !heard {
                                            heard = true
                                            link.heardFrom.withLock { $0 = true }
                                        }
                                        inboundContinuation.yield(message)
                                    }
                                } catch {
                                    // A broken frame or a reset: the link is over; the coordinator sees it close.
                                    if ControlTLS.isTLSError(error) {
                                        link.reason.withLock { $0 = ControlTLS.explain(error, dialled: address.name ?? address.host) }
                                    }
                                }
                            }
                            pair.addTask {
                                for await _ in closed {}
                            }
                            // Whichever ends first (the agent closed, or we closed the link) ends both.
                            await pair.next()
                            pair.cancelAll()
                        }
                    }
                    inboundContinuation.finish()
                    closedContinuation.finish()
                }
            }
            do {
                let result = try await body(links)
                for link in links { link.close() }
                try await group.waitForAll()
                return result
            } catch {
                for link in links { link.close() }
                try? await group.waitForAll()
                throw error
            }
        }
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? IOError { return error.description }
        if let error = error as? ChannelError {
            switch error {
            case .connectTimeout(let t): return "no answer within \(DurationText.format(nanos: UInt64(t.nanoseconds)))"
            default: return "\(error)"
            }
        }
        if error is NIOConnectionError { return "connection refused or unreachable" }
        return "\(error)"
    }
}
