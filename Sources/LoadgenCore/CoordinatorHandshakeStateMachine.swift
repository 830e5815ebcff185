/// The coordinator's side of connecting to N agents, as a pure state machine (the first part of its view of a run;
/// ``RunStateMachine`` is the rest): events go in (a message, a closed connection, a tick, Ctrl-C), each with the
/// time, and actions come out for ``CoordinatorSession`` to carry out. No I/O, no clock, no randomness of its own.
///
///     per agent:  awaitingWelcome ──welcome (version, proof, nonce checked)──▶ awaitingReady ──ready──▶ ready
///     then:       handshaking ──every agent ready──▶ pinging(round 0..2) ──every pong of round 2──▶ connected
///                      └── a refusal, a bad proof, another version, a close, the deadline, Ctrl-C ──▶ failed
///
/// The handshake must finish within `handshakeTimeoutNanos` of the start, and the three rounds of pings within as
/// long again after that. Heartbeats from agents already ready are expected meanwhile; anything else is a protocol
/// error. The first failure ends the whole connect (with one sentence naming the agent); nothing is retried.
public struct CoordinatorHandshakeStateMachine: Sendable {
    public enum AgentState: Sendable, Equatable {
        case awaitingWelcome
        case awaitingReady(WireMessage.Welcome)
        case ready(WireMessage.Welcome, WireMessage.Ready)
    }

    public enum Stage: Sendable, Equatable {
        case idle
        case handshaking(deadlineNanos: UInt64)
        case pinging(round: Int, answered: Int, deadlineNanos: UInt64)
        case connected
        case failed
    }

    public enum Event: Sendable {
        case message(Int, WireMessage)
        /// The agent's connection ended, with what the link knows of why (a TLS failure, say).
        case closed(Int, reason: String?)
        case tick
        case interrupt
    }

    public enum Action: Sendable, Equatable {
        case send(Int, WireMessage)
        /// The agent finished the handshake: heartbeats go to it from now on.
        case authenticated(Int)
        case connected([ConnectedAgent])
        case fail(LoadgenError)
    }

    public static let pingRounds = 3

    public let addresses: [String]
    public let loadgenVersion: String
    public let coordinatorHost: String
    public let prover: (any SecretProver)?
    /// The nonce sent to each agent (the session makes them: randomness stays outside the machine).
    public let nonces: [String]
    public let handshakeTimeoutNanos: UInt64

    public private(set) var stage = Stage.idle
    public private(set) var agents: [AgentState]
    /// The shortest round trip per agent, with the clock offset measured at it.
    private var best: [(rtt: UInt64, offset: Int64)?]
    /// When each ping went out, by sequence number, on the coordinator's wall clock.
    private var sentWall: [Int: UInt64] = [:]
    private var answered: Set<Int> = []

    public init(addresses: [String], loadgenVersion: String, coordinatorHost: String, prover: (any SecretProver)?,
                nonces: [String], handshakeTimeoutNanos: UInt64) {
        precondition(nonces.count == addresses.count, "one nonce per agent")
        self.addresses = addresses
        self.loadgenVersion = loadgenVersion
        self.coordinatorHost = coordinatorHost
        self.prover = prover
        self.nonces = nonces
        self.handshakeTimeoutNanos = handshakeTimeoutNanos
        self.agents = Array(repeating: .awaitingWelcome, count: addresses.count)
        self.best = Array(repeating: nil, count: addresses.count)
    }

    /// Sends every agent its hello.
    public mutating func start(nowNanos now: UInt64) -> [Action] {
        guard self.stage == .idle else { return [] }
        self.stage = .handshaking(deadlineNanos: now &+ self.handshakeTimeoutNanos)
        return self.addresses.indices.map { index in
            .send(index, .hello(.init(loadgenVersion: self.loadgenVersion, coordinatorHost: self.coordinatorHost,
                                      nonce: self.nonces[index])))
        }
    }

    public mutating func handle(_ event: Event, nowNanos now: UInt64, wallNanos wall: UInt64) -> [Action] {
        switch self.stage {
        case .idle, .connected, .failed:
            return []
        case .handshaking, .pinging:
            break
        }
        switch event {
        case .interrupt:
            return self.fail(.aborted, "Interrupted while connecting to the agents.")
        case .closed(let index, let reason):
            let address = self.addresses[index]
            guard let reason else { return self.fail(.unreachable, "Agent \(address) closed the connection during the handshake.") }
            return self.fail(.unreachable, "The connection to agent \(address) ended during the handshake: \(reason).")
        case .tick:
            return self.tick(now: now)
        case .message(let index, let message):
            return self.received(message, from: index, now: now, wall: wall)
        }
    }

    private mutating func fail(_ code: LoadgenError.Code, _ text: String) -> [Action] {
        self.stage = .failed
        return [.fail(LoadgenError(code, text))]
    }

    private mutating func tick(now: UInt64) -> [Action] {
        switch self.stage {
        case .handshaking(let deadline) where now > deadline:
            let slow = self.addresses.indices.filter { if case .ready = self.agents[$0] { false } else { true } }
            return self.fail(.unreachable, "Agent \(slow.map { self.addresses[$0] }.joined(separator: ", ")) did not finish the handshake within \(DurationText.format(nanos: self.handshakeTimeoutNanos)).")
        case .pinging(_, _, let deadline) where now > deadline:
            let silent = self.addresses.indices.filter { !self.answered.contains($0) }.map { self.addresses[$0] }
            return self.fail(.unreachable, "Agent \(silent.joined(separator: ", ")) did not answer its round-trip pings within \(DurationText.format(nanos: self.handshakeTimeoutNanos)).")
        default:
            return []
        }
    }

    private mutating func received(_ message: WireMessage, from index: Int, now: UInt64, wall: UInt64) -> [Action] {
        let address = self.addresses[index]
        switch (self.agents[index], message) {
        case (_, .heartbeat):
            // An agent that is ready already answers heartbeats while others finish their handshake.
            return []
        case (_, .failure(let failure)):
            return self.fail(failure.code == .protocolViolation || failure.code == .unreachable ? failure.code : .authentication,
                             "Agent \(address) refused the connection: \(failure.message)")
        case (.awaitingWelcome, .welcome(let welcome)):
            guard welcome.protocolVersion == WireMessage.protocolVersion else {
                return self.fail(.authentication, "Agent \(address) speaks loadgen protocol version \(welcome.protocolVersion); this coordinator speaks version \(WireMessage.protocolVersion).")
            }
            if welcome.authRequired {
                guard let prover = self.prover else {
                    return self.fail(.authentication, "Agent \(address) requires a shared secret: give the coordinator --secret-file.")
                }
                guard let proof = welcome.proof,
                      prover.verify(proof, label: Handshake.agentLabel, first: self.nonces[index], second: welcome.nonce)
                else {
                    return self.fail(.authentication, "Agent \(address) did not prove it holds this coordinator's secret: the two --secret-file files differ.")
                }
            }
            guard Handshake.isWellFormedNonce(welcome.nonce) else {
                return self.fail(.authentication, "Agent \(address) sent a malformed nonce.")
            }
            self.agents[index] = .awaitingReady(welcome)
            let proof = welcome.authRequired
                ? self.prover?.proof(label: Handshake.coordinatorLabel, first: welcome.nonce, second: self.nonces[index]) : nil
            return [.send(index, .auth(.init(proof: proof)))]
        case (.awaitingReady(let welcome), .ready(let ready)):
            self.agents[index] = .ready(welcome, ready)
            var actions: [Action] = [.authenticated(index)]
            if self.agents.allSatisfy({ if case .ready = $0 { true } else { false } }) {
                actions += self.startPings(round: 0, now: now, wall: wall, deadline: now &+ self.handshakeTimeoutNanos)
            }
            return actions
        case (.ready, .pong(let pong)):
            guard case .pinging(let round, let count, let deadline) = self.stage,
                  pong.seq == round * self.addresses.count + index, !self.answered.contains(index)
            else {
                return self.fail(.protocolViolation, "Agent \(address) sent a pong (\(pong.seq)) for no ping it was sent.")
            }
            self.answered.insert(index)
            let rtt = now &- pong.sentNanos
            let wallAtAgent = Int64(bitPattern: (self.sentWall[pong.seq] ?? 0) &+ rtt / 2)
            let offset = Int64(bitPattern: pong.agentWallNanos) &- wallAtAgent
            if self.best[index] == nil || rtt < self.best[index]!.rtt { self.best[index] = (rtt, offset) }
            guard count + 1 == self.addresses.count else {
                self.stage = .pinging(round: round, answered: count + 1, deadlineNanos: deadline)
                return []
            }
            if round + 1 < Self.pingRounds {
                return self.startPings(round: round + 1, now: now, wall: wall, deadline: deadline)
            }
            return self.finish()
        case (.awaitingWelcome, _), (.awaitingReady, _):
            return self.fail(.protocolViolation, "Agent \(address) sent \(message.kind.rawValue) during the handshake.")
        case (.ready, _):
            return self.fail(.protocolViolation, "Agent \(address) sent \(message.kind.rawValue) instead of pong.")
        }
    }

    private mutating func startPings(round: Int, now: UInt64, wall: UInt64, deadline: UInt64) -> [Action] {
        self.stage = .pinging(round: round, answered: 0, deadlineNanos: deadline)
        self.answered = []
        return self.addresses.indices.map { index in
            let seq = round * self.addresses.count + index
            self.sentWall[seq] = wall
            return .send(index, .ping(.init(seq: seq, sentNanos: now)))
        }
    }

    private mutating func finish() -> [Action] {
        let connected: [ConnectedAgent] = self.addresses.indices.map { index in
            guard case .ready(let welcome, let ready) = self.agents[index] else { preconditionFailure("every agent is ready") }
            return ConnectedAgent(index: index, address: self.addresses[index], agentID: welcome.agentID, host: welcome.host,
                                  cores: welcome.cores, loadgenVersion: welcome.loadgenVersion, policy: ready.policy,
                                  openFileLimit: ready.openFileLimit, rttNanos: self.best[index]?.rtt ?? 0,
                                  clockOffsetNanos: self.best[index]?.offset ?? 0)
        }
        let ids = connected.map(\.agentID)
        if Set(ids).count != ids.count, let twice = ids.first(where: { id in ids.filter { $0 == id }.count > 1 }) {
            return self.fail(.usage, "Two agents share the agent id '\(twice)': give each agent its own --id, so their run directories and records stay apart.")
        }
        self.stage = .connected
        return [.connected(connected)]
    }
}
