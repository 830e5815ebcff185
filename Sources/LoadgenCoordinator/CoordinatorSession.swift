import LoadgenCore
import Synchronization

/// The coordinator's side of one invocation: connects to its agents (handshake, round trips), then drives runs on
/// all of them and merges what they report.
///
/// Everything the agents send, a 100 ms tick and Ctrl-C arrive on one event stream, consumed by one loop, so the
/// run's state has one owner and no locks. Heartbeats go to every authenticated agent every 500 ms from a task of
/// their own; an agent silent for ``CoordinatorConfiguration/silenceLimitNanos`` is marked lost and the run goes on
/// without it.
public final class CoordinatorSession {
    enum Event: Sendable {
        case message(Int, WireMessage)
        case closed(Int)
        case tick
        case interrupt
    }

    public let configuration: CoordinatorConfiguration
    private let links: [any AgentLink]
    private var events: AsyncStream<Event>.Iterator
    private let authenticated: Locked<[Bool]>
    public private(set) var agents: [ConnectedAgent] = []
    private var lastHeard: [UInt64]
    private var alive: [Bool]
    /// Set by Ctrl-C: the current run is aborted, later runs are not started.
    public private(set) var interrupted = false

    private init(configuration: CoordinatorConfiguration, links: [any AgentLink], events: AsyncStream<Event>,
                 authenticated: Locked<[Bool]>) {
        self.configuration = configuration
        self.links = links
        self.events = events.makeAsyncIterator()
        self.authenticated = authenticated
        self.lastHeard = Array(repeating: MonotonicClock.nowNanos(), count: links.count)
        self.alive = Array(repeating: true, count: links.count)
    }

    /// Runs `body` with a session over `links`; `interrupts` yields once per Ctrl-C.
    public static func with<R: Sendable>(
        links: [any AgentLink], configuration: CoordinatorConfiguration, interrupts: AsyncStream<Void>? = nil,
        _ body: (CoordinatorSession) async throws(LoadgenError) -> R
    ) async throws(LoadgenError) -> R {
        let (events, continuation) = AsyncStream.makeStream(of: Event.self)
        let authenticated = Locked(Array(repeating: false, count: links.count))
        let result: Result<R, LoadgenError> = await withTaskGroup(of: Void.self) { group in
            for (index, link) in links.enumerated() {
                group.addTask {
                    for await message in link.inbound { continuation.yield(.message(index, message)) }
                    continuation.yield(.closed(index))
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(100))
                    continuation.yield(.tick)
                }
            }
            let heartbeat = configuration.heartbeatIntervalNanos
            group.addTask {
                var seq = 0
                while !Task.isCancelled {
                    try? await Task.sleep(for: .nanoseconds(Int64(heartbeat)))
                    seq += 1
                    let ready = authenticated.withLock { $0 }
                    for (index, link) in links.enumerated() where ready[index] {
                        _ = await link.send(.heartbeat(.init(seq: seq)))
                    }
                }
            }
            if let interrupts {
                group.addTask {
                    for await _ in interrupts { continuation.yield(.interrupt) }
                }
            }
            let session = CoordinatorSession(configuration: configuration, links: links, events: events,
                                             authenticated: authenticated)
            let result: Result<R, LoadgenError>
            do throws(LoadgenError) {
                result = .success(try await body(session))
            } catch {
                result = .failure(error)
            }
            for link in links { link.close() }
            group.cancelAll()
            continuation.finish()
            return result
        }
        return try result.get()
    }

    func nextEvent() async -> Event? {
        guard let event = await self.events.next() else { return nil }
        switch event {
        case .message(let index, _):
            self.lastHeard[index] = MonotonicClock.nowNanos()
        case .closed(let index):
            self.alive[index] = false
        case .interrupt:
            self.interrupted = true
        case .tick:
            break
        }
        return event
    }

    // MARK: - Agents

    func isAlive(_ index: Int) -> Bool { self.alive[index] }

    func lastHeardAt(_ index: Int) -> UInt64 { self.lastHeard[index] }

    func isSilent(_ index: Int, now: UInt64) -> Bool {
        self.alive[index] && now &- self.lastHeard[index] > self.configuration.silenceLimitNanos
    }

    func send(_ index: Int, _ message: WireMessage) async -> Bool {
        guard self.alive[index] else { return false }
        return await self.links[index].send(message)
    }

    /// Stops talking to an agent: no more heartbeats, the connection is closed.
    func drop(_ index: Int) {
        self.alive[index] = false
        self.authenticated.withLock { $0[index] = false }
        self.links[index].close()
    }

    // MARK: - Handshake

    /// Authenticates every agent and measures its round trip and clock offset. Throws a refusal (exit 2) naming the
    /// agent when any cannot be reached, speaks another protocol version, or fails the secret check. A thin shell
    /// over ``CoordinatorHandshakeStateMachine``: it feeds the events in and carries the actions out.
    public func connect() async throws(LoadgenError) -> [ConnectedAgent] {
        var machine = CoordinatorHandshakeStateMachine(
            addresses: self.links.map(\.address), loadgenVersion: self.configuration.loadgenVersion,
            coordinatorHost: self.configuration.host, prover: self.configuration.prover,
            nonces: self.links.map { _ in Handshake.makeNonce() }, handshakeTimeoutNanos: self.configuration.handshakeTimeoutNanos)
        var actions = machine.start(nowNanos: MonotonicClock.nowNanos())
        while true {
            for action in actions {
                switch action {
                case .send(let index, let message):
                    // A link already closed (a TLS handshake that failed on either side) ends its stream too: the
                    // machine meets that close with the reason the link recorded.
                    _ = await self.links[index].send(message)
                case .authenticated(let index):
                    self.authenticated.withLock { $0[index] = true }
                case .connected(let agents):
                    self.agents = agents
                    return agents
                case .fail(let error):
                    throw error
                }
            }
            guard let event = await self.nextEvent() else { throw LoadgenError(.aborted, "The coordinator was stopped.") }
            let input: CoordinatorHandshakeStateMachine.Event
            switch event {
            case .message(let index, let message): input = .message(index, message)
            case .closed(let index): input = .closed(index, reason: self.links[index].closeReason)
            case .tick: input = .tick
            case .interrupt: input = .interrupt
            }
            actions = machine.handle(input, nowNanos: MonotonicClock.nowNanos(), wallNanos: MonotonicClock.wallNanos())
        }
    }
}
