import LoadgenAgent
import LoadgenCore

/// The coordinator's end of a connection to one agent: messages out, messages in. Remote agents speak frames over
/// TCP; the embedded agent is the same ``AgentSession`` fed in memory, so a run takes one code path either way.
public protocol AgentLink: Sendable {
    /// Where the agent is: `host:port`, or `embedded`.
    var address: String { get }
    /// Sends one message; false once the connection is gone.
    func send(_ message: WireMessage) async -> Bool
    /// What the agent sends, until the connection closes.
    var inbound: AsyncStream<WireMessage> { get }
    /// Closes the connection (ends ``inbound``).
    func close()
    /// Why the connection ended, when the link knows more than that it closed (a TLS failure, say).
    var closeReason: String? { get }
}

extension AgentLink {
    public var closeReason: String? { nil }
}

/// An agent in this process: an ``AgentSession`` with in-memory queues instead of a socket.
public final class EmbeddedAgentLink: AgentLink {
    public let address = "embedded"
    public let inbound: AsyncStream<WireMessage>
    private let toAgent: AsyncStream<WireMessage>.Continuation
    private let fromAgent: AsyncStream<WireMessage>.Continuation

    private init(inbound: AsyncStream<WireMessage>, toAgent: AsyncStream<WireMessage>.Continuation,
                 fromAgent: AsyncStream<WireMessage>.Continuation) {
        self.inbound = inbound
        self.toAgent = toAgent
        self.fromAgent = fromAgent
    }

    public func send(_ message: WireMessage) async -> Bool {
        if case .terminated = self.toAgent.yield(message) { return false }
        return true
    }

    public func close() {
        self.toAgent.finish()
    }

    /// Runs an embedded agent for the duration of `body`.
    public static func with<R: Sendable>(configuration: AgentConfiguration,
                                         _ body: (EmbeddedAgentLink) async throws -> R) async rethrows -> R {
        let (agentInbound, toAgent) = AsyncStream.makeStream(of: WireMessage.self)
        let (coordinatorInbound, fromAgent) = AsyncStream.makeStream(of: WireMessage.self)
        let link = EmbeddedAgentLink(inbound: coordinatorInbound, toAgent: toAgent, fromAgent: fromAgent)
        let session = AgentSession(configuration: configuration, slot: AgentRunSlot(), peer: "this process")
        async let served: Void = {
            await session.run(inbound: agentInbound, send: { message in
                if case .terminated = fromAgent.yield(message) { return false }
                return true
            }, close: { toAgent.finish() })
            fromAgent.finish()
        }()
        do {
            let result = try await body(link)
            link.close()
            await served
            return result
        } catch {
            link.close()
            await served
            throw error
        }
    }
}
