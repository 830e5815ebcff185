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
    /// agent when any cannot be reached, speaks another protocol version, or fails the secret check.
    public func connect() async throws(LoadgenError) -> [ConnectedAgent] {
        let count = self.links.count
        let nonces = (0..<count).map { _ in Handshake.makeNonce() }
        var welcomes: [WireMessage.Welcome?] = Array(repeating: nil, count: count)
        var policies: [AgentPolicySummary?] = Array(repeating: nil, count: count)
        var openFileLimits: [UInt64?] = Array(repeating: nil, count: count)
        for (index, link) in self.links.enumerated() {
            let hello = WireMessage.Hello(loadgenVersion: self.configuration.loadgenVersion,
                                          coordinatorHost: self.configuration.host, nonce: nonces[index])
            // A link already closed (a TLS handshake that failed on either side) ends its stream too: the loop
            // below meets that close and names the reason the link recorded, which a throw here would race.
            _ = await link.send(.hello(hello))
        }
        let deadline = MonotonicClock.nowNanos() &+ self.configuration.handshakeTimeoutNanos
        while policies.contains(where: { $0 == nil }) {
            guard let event = await self.nextEvent() else { throw LoadgenError(.aborted, "The coordinator was stopped.") }
            switch event {
            case .message(let index, .welcome(let welcome)):
                let address = self.links[index].address
                guard welcome.protocolVersion == WireMessage.protocolVersion else {
                    throw LoadgenError(.authentication, "Agent \(address) speaks loadgen protocol version \(welcome.protocolVersion); this coordinator speaks version \(WireMessage.protocolVersion).")
                }
                if welcome.authRequired {
                    guard let prover = self.configuration.prover else {
                        throw LoadgenError(.authentication, "Agent \(address) requires a shared secret: give the coordinator --secret-file.")
                    }
                    guard let proof = welcome.proof,
                          prover.verify(proof, label: Handshake.agentLabel, first: nonces[index], second: welcome.nonce)
                    else {
                        throw LoadgenError(.authentication, "Agent \(address) did not prove it holds this coordinator's secret: the two --secret-file files differ.")
                    }
                }
                guard Handshake.isWellFormedNonce(welcome.nonce) else {
                    throw LoadgenError(.authentication, "Agent \(address) sent a malformed nonce.")
                }
                welcomes[index] = welcome
                let proof = self.configuration.prover?.proof(label: Handshake.coordinatorLabel, first: welcome.nonce,
                                                             second: nonces[index])
                _ = await self.links[index].send(.auth(.init(proof: welcome.authRequired ? proof : nil)))
            case .message(let index, .ready(let ready)):
                policies[index] = ready.policy
                openFileLimits[index] = ready.openFileLimit
                self.authenticated.withLock { $0[index] = true }
            case .message(let index, .failure(let failure)):
                throw LoadgenError(failure.code == .protocolViolation || failure.code == .unreachable ? failure.code : .authentication,
                                   "Agent \(self.links[index].address) refused the connection: \(failure.message)")
            case .message(_, .heartbeat):
                // An agent that is ready already answers heartbeats while others finish their handshake.
                continue
            case .message(let index, let other):
                throw LoadgenError(.protocolViolation, "Agent \(self.links[index].address) sent \(other.kind.rawValue) during the handshake.")
            case .closed(let index):
                throw self.closedDuringHandshake(index)
            case .interrupt:
                throw LoadgenError(.aborted, "Interrupted while connecting to the agents.")
            case .tick:
                if MonotonicClock.nowNanos() > deadline {
                    let slow = self.links.indices.filter { policies[$0] == nil }.map { self.links[$0].address }
                    throw LoadgenError(.unreachable, "Agent \(slow.joined(separator: ", ")) did not finish the handshake within \(DurationText.format(nanos: self.configuration.handshakeTimeoutNanos)).")
                }
            }
        }
        // Three pings each: the shortest round trip, and the clock offset measured at it.
        var best: [(rtt: UInt64, offset: Int64)?] = Array(repeating: nil, count: count)
        var sentWall: [Int: UInt64] = [:]
        for round in 0..<3 {
            for (index, link) in self.links.enumerated() {
                let seq = round * count + index
                sentWall[seq] = MonotonicClock.wallNanos()
                _ = await link.send(.ping(.init(seq: seq, sentNanos: MonotonicClock.nowNanos())))
            }
            var answered = 0
            while answered < count {
                guard let event = await self.nextEvent() else { throw LoadgenError(.aborted, "The coordinator was stopped.") }
                switch event {
                case .message(let index, .pong(let pong)):
                    let now = MonotonicClock.nowNanos()
                    let rtt = now &- pong.sentNanos
                    let wallAtAgent = Int64(bitPattern: (sentWall[pong.seq] ?? 0) &+ rtt / 2)
                    let offset = Int64(bitPattern: pong.agentWallNanos) &- wallAtAgent
                    if best[index] == nil || rtt < best[index]!.rtt { best[index] = (rtt, offset) }
                    answered += 1
                case .message(_, .heartbeat):
                    continue
                case .message(let index, let other):
                    throw LoadgenError(.protocolViolation, "Agent \(self.links[index].address) sent \(other.kind.rawValue) instead of pong.")
                case .closed(let index):
                    throw self.closedDuringHandshake(index)
                case .interrupt:
                    throw LoadgenError(.aborted, "Interrupted while connecting to the agents.")
                case .tick:
                    if MonotonicClock.nowNanos() > deadline &+ self.configuration.handshakeTimeoutNanos {
                        throw LoadgenError(.unreachable, "An agent did not answer its round-trip pings.")
                    }
                }
            }
        }
        self.agents = self.links.indices.map { index in
            let welcome = welcomes[index]!
            return ConnectedAgent(index: index, address: self.links[index].address, agentID: welcome.agentID,
                                  host: welcome.host, cores: welcome.cores, loadgenVersion: welcome.loadgenVersion,
                                  policy: policies[index]!, openFileLimit: openFileLimits[index],
                                  rttNanos: best[index]?.rtt ?? 0,
                                  clockOffsetNanos: best[index]?.offset ?? 0)
        }
        let ids = self.agents.map(\.agentID)
        if Set(ids).count != ids.count {
            throw LoadgenError(.usage, "Two agents share the agent id '\(ids.first { id in ids.filter { $0 == id }.count > 1 }!)': give each agent its own --id, so their run directories and records stay apart.")
        }
        return self.agents
    }
}

extension CoordinatorSession {
    /// An agent's connection ended before the handshake was through, with what the link knows of why.
    func closedDuringHandshake(_ index: Int) -> LoadgenError {
        let address = self.links[index].address
        guard let reason = self.links[index].closeReason else {
            return LoadgenError(.unreachable, "Agent \(address) closed the connection during the handshake.")
        }
        return LoadgenError(.unreachable, "The connection to agent \(address) ended during the handshake: \(reason).")
    }
}
