/// The agent's side of one coordinator's connection, as a pure state machine: events go in (a message, something
/// the run emitted, the run's end, a tick, the connection closing), actions come out for the session to carry out.
/// No I/O, no clock of its own, no locks: the session owns one and feeds it under its lock.
///
///     handshake:  awaitingHello ──hello──▶ awaitingAuth ──auth (valid proof)──▶ ready
///                       └──── anything else, a bad proof, a version mismatch: error, then close ────┘
///
///     run (once ready):
///       idle ──prepare──▶ preparing ──prepared──▶ active ──finish──▶ finishing ──finished──▶ closing ──ended──▶ idle
///                            └──refused──▶ closing                     (closing: `closed` is sent when it ends)
///
///     clean (once ready, beside any run): clean ──▶ cleaning ──cleaned──▶ (one at a time; a second is answered
///                                                                        `cleaned` with a refusal)
///
/// A run is *closing* from its last message until its slot is really free (its executor, worker processes and ring
/// gone): only then does the agent send `closed`, and only then does it take the next prepare. A prepare that
/// arrives while closing waits for the close, for at most ``closeWaitNanos``, rather than being refused as busy.
/// Every prepare the agent accepts to look at is answered by `prepared` or `refused` and ends with one `closed`.
///
/// Dead-man switch: while a run is preparing, active or finishing, silence from the coordinator for
/// ``silenceLimitNanos`` stops the run (once); it is never resumed.
public struct AgentSessionStateMachine: Sendable {
    /// What the agent says about itself in the handshake, fixed for the session.
    public struct Greeting: Sendable {
        public var agentID: String
        public var host: String
        public var cores: Int
        public var loadgenVersion: String
        /// This session's nonce (the session makes it: randomness stays outside the machine).
        public var nonce: String
        public var ready: WireMessage.Ready

        public init(agentID: String, host: String, cores: Int, loadgenVersion: String, nonce: String, ready: WireMessage.Ready) {
            self.agentID = agentID
            self.host = host
            self.cores = cores
            self.loadgenVersion = loadgenVersion
            self.nonce = nonce
            self.ready = ready
        }
    }

    public enum Stage: Sendable, Equatable {
        case awaitingHello
        case awaitingAuth(coordinatorNonce: String)
        case ready
        case over
    }

    public enum RunState: Sendable, Equatable {
        case idle
        /// The run was handed to the session to prepare; `prepared` or `refused` has not gone out yet.
        case preparing(String)
        case active(String)
        /// `finish` arrived (or the run was stopped before it was prepared); `finished` has not gone out yet.
        case finishing(String)
        /// Its last message went out; the slot is not free yet.
        case closing(String)

        public var runID: String? {
            switch self {
            case .idle: nil
            case .preparing(let id), .active(let id), .finishing(let id), .closing(let id): id
            }
        }
    }

    public enum Event: Sendable {
        case received(WireMessage)
        /// The run emitted a message (prepared, refused, interval, phase_done, finished), or a clean its `cleaned`.
        case runEmitted(WireMessage)
        /// The run with this id is over and its slot free.
        case runEnded(String)
        case tick
        case connectionClosed
    }

    public enum Action: Sendable, Equatable {
        case send(WireMessage)
        /// Sends the message, then closes the connection.
        case sendAndClose(WireMessage)
        case close
        /// Answers a ping with the agent's wall clock (read by the session).
        case pong(WireMessage.Ping)
        /// Answers a heartbeat unless something else went out in the last 500 ms (the session knows when).
        case answerHeartbeat(WireMessage.Heartbeat)
        /// Checks the request against the policy, claims the slot (waiting for a closing run), and runs it.
        case prepare(RunRequest)
        case startPhase(String, Phase, delayNanos: UInt64)
        /// Tells the run it is over and ends its command stream.
        case finishRun(String)
        /// Stops the run's load at once (abort, silence, a lost connection), with the reason.
        case stopRun(String, reason: String)
        /// Cleans a target away from the session's loop (it may take a while) and emits `cleaned`.
        case clean(WireMessage.Clean)
    }

    public let greeting: Greeting
    public let prover: (any SecretProver)?
    public let silenceLimitNanos: UInt64
    public let handshakeDeadlineNanos: UInt64
    /// How long a prepare waits for the previous run to close before it is refused.
    public let closeWaitNanos: UInt64
    /// Who is on the other end, for messages.
    public let peer: String

    public private(set) var stage = Stage.awaitingHello
    public private(set) var run = RunState.idle
    /// A prepare waiting for the closing run, with when it arrived.
    public private(set) var pending: (request: RunRequest, sinceNanos: UInt64)?
    private let startedNanos: UInt64
    private var lastHeardNanos: UInt64
    private var silenceStopped = false
    /// A clean is under way on this connection (one at a time; it ends when its `cleaned` is emitted).
    public private(set) var cleaning = false

    public init(greeting: Greeting, prover: (any SecretProver)?, peer: String, nowNanos: UInt64,
                silenceLimitNanos: UInt64 = 1_500_000_000, handshakeDeadlineNanos: UInt64 = 5_000_000_000,
                closeWaitNanos: UInt64 = 10_000_000_000) {
        self.greeting = greeting
        self.prover = prover
        self.peer = peer
        self.silenceLimitNanos = silenceLimitNanos
        self.handshakeDeadlineNanos = handshakeDeadlineNanos
        self.closeWaitNanos = closeWaitNanos
        self.startedNanos = nowNanos
        self.lastHeardNanos = nowNanos
    }

    public mutating func handle(_ event: Event, nowNanos now: UInt64) -> [Action] {
        guard self.stage != .over else {
            // After the session is over, only the run's own end still matters (for the slot, not the peer).
            if case .runEnded(let id) = event, self.run.runID == id { self.run = .idle }
            return []
        }
        switch event {
        case .received(let message):
            self.lastHeardNanos = now
            return self.received(message, now: now)
        case .runEmitted(let message):
            return self.emitted(message)
        case .runEnded(let id):
            return self.ended(id, now: now)
        case .tick:
            return self.tick(now: now)
        case .connectionClosed:
            self.stage = .over
            self.pending = nil
            switch self.run {
            case .preparing(let id), .active(let id), .finishing(let id):
                return [.stopRun(id, reason: "The connection to the coordinator \(self.peer) closed; the run was stopped."), .finishRun(id)]
            case .idle, .closing:
                return []
            }
        }
    }

    private mutating func fail(_ code: LoadgenError.Code, _ text: String) -> [Action] {
        var actions: [Action] = [.sendAndClose(.failure(.init(code: code, message: text)))]
        self.stage = .over
        self.pending = nil
        if let id = self.run.runID, self.run != .closing(id) {
            actions.append(.stopRun(id, reason: "The coordinator's connection failed: \(text)"))
            actions.append(.finishRun(id))
        }
        return actions
    }

    private mutating func received(_ message: WireMessage, now: UInt64) -> [Action] {
        switch (self.stage, message) {
        case (.awaitingHello, .hello(let hello)):
            guard hello.protocolVersion == WireMessage.protocolVersion else {
                return self.fail(.authentication, "Agent \(self.greeting.agentID) speaks loadgen protocol version \(WireMessage.protocolVersion); the coordinator speaks version \(hello.protocolVersion).")
            }
            guard Handshake.isWellFormedNonce(hello.nonce) else {
                return self.fail(.authentication, "The coordinator's nonce is not 64 hexadecimal digits.")
            }
            self.stage = .awaitingAuth(coordinatorNonce: hello.nonce)
            let proof = self.prover?.proof(label: Handshake.agentLabel, first: hello.nonce, second: self.greeting.nonce)
            return [.send(.welcome(.init(
                loadgenVersion: self.greeting.loadgenVersion, agentID: self.greeting.agentID, host: self.greeting.host,
                cores: self.greeting.cores, nonce: self.greeting.nonce, authRequired: self.prover != nil, proof: proof)))]

        case (.awaitingAuth(let coordinatorNonce), .auth(let auth)):
            if let prover = self.prover {
                guard let proof = auth.proof,
                      prover.verify(proof, label: Handshake.coordinatorLabel, first: self.greeting.nonce, second: coordinatorNonce)
                else {
                    return self.fail(.authentication, "The coordinator did not prove it holds this agent's secret.")
                }
            }
            self.stage = .ready
            return [.send(.ready(self.greeting.ready))]

        case (.awaitingHello, _), (.awaitingAuth, _):
            return self.fail(.authentication, "A \(message.kind.rawValue) message arrived before the handshake finished.")

        case (.ready, .ping(let ping)):
            return [.pong(ping)]

        case (.ready, .heartbeat(let beat)):
            return [.answerHeartbeat(beat)]

        case (.ready, .prepare(let prepare)):
            switch self.run {
            case .idle:
                self.run = .preparing(prepare.request.runID)
                return [.prepare(prepare.request)]
            case .closing(let closing) where self.pending == nil && closing != prepare.request.runID:
                // The last run's slot is not free yet: this prepare goes ahead when it is (bounded by the tick).
                self.pending = (prepare.request, now)
                return []
            default:
                return self.fail(.protocolViolation, "A prepare for run \(prepare.request.runID) arrived while run \(self.run.runID ?? "?") is still in progress on this connection.")
            }

        case (.ready, .start(let start)):
            guard case .active(let id) = self.run, id == start.runID else {
                return self.fail(.protocolViolation, "A start for run \(start.runID) arrived, but that run is not prepared here.")
            }
            return [.startPhase(id, start.phase, delayNanos: min(start.delayNanos ?? 0, 10_000_000_000))]

        case (.ready, .finish(let finish)):
            switch self.run {
            case .preparing(let id) where id == finish.runID, .active(let id) where id == finish.runID:
                self.run = .finishing(id)
                return [.finishRun(id)]
            default:
                // A finish for a run that is finishing, closing or gone: nothing left to do.
                return []
            }

        case (.ready, .abort(let abort)):
            switch self.run {
            case .preparing(let id) where id == abort.runID, .active(let id) where id == abort.runID,
                 .finishing(let id) where id == abort.runID:
                return [.stopRun(id, reason: abort.reason)]
            default:
                return []
            }

        case (.ready, .clean(let clean)):
            // Independent of the run: a live run's directory is locked, so the clean passes it by.
            guard !self.cleaning else {
                return [.send(.cleaned(.init(target: clean.target, report: nil, refusal: .init(
                    code: .usage, message: "Agent \(self.greeting.agentID) is already cleaning for this coordinator; one clean at a time."))))]
            }
            self.cleaning = true
            return [.clean(clean)]

        case (.ready, .failure(let failure)):
            self.stage = .over
            self.pending = nil
            var actions: [Action] = []
            if let id = self.run.runID, self.run != .closing(id) {
                actions = [.stopRun(id, reason: "The coordinator reported an error: \(failure.message)"), .finishRun(id)]
            }
            return actions + [.close]

        case (.ready, _):
            return self.fail(.protocolViolation, "An agent does not accept \(message.kind.rawValue) messages.")

        case (.over, _):
            return []
        }
    }

    private mutating func emitted(_ message: WireMessage) -> [Action] {
        if case .cleaned = message {
            self.cleaning = false
            return [.send(message)]
        }
        switch (self.run, message) {
        case (.preparing(let id), .prepared(let prepared)) where prepared.runID == id:
            self.run = .active(id)
        case (.preparing(let id), .refused(let refused)) where refused.runID == id,
             (.finishing(let id), .refused(let refused)) where refused.runID == id:
            self.run = .closing(id)
        case (.preparing(let id), .finished(let finished)) where finished.runID == id,
             (.active(let id), .finished(let finished)) where finished.runID == id,
             (.finishing(let id), .finished(let finished)) where finished.runID == id:
            self.run = .closing(id)
        default:
            break
        }
        return [.send(message)]
    }

    private mutating func ended(_ id: String, now: UInt64) -> [Action] {
        guard self.run.runID == id else { return [] }
        self.run = .idle
        self.silenceStopped = false
        var actions: [Action] = [.send(.closed(.init(runID: id)))]
        if let waiting = self.pending {
            self.pending = nil
            self.run = .preparing(waiting.request.runID)
            actions.append(.prepare(waiting.request))
        }
        return actions
    }

    private mutating func tick(now: UInt64) -> [Action] {
        if self.stage != .ready, now &- self.startedNanos > self.handshakeDeadlineNanos {
            return self.fail(.authentication, "The handshake did not finish within \(DurationText.format(nanos: self.handshakeDeadlineNanos)).")
        }
        var actions: [Action] = []
        let silent = now &- self.lastHeardNanos
        switch self.run {
        case .preparing(let id), .active(let id), .finishing(let id):
            if silent > self.silenceLimitNanos, !self.silenceStopped {
                self.silenceStopped = true
                actions.append(.stopRun(id, reason: "The coordinator \(self.peer) was silent for \(DurationText.format(nanos: silent)); the run was stopped."))
            }
        case .closing(let id):
            if let waiting = self.pending, now &- waiting.sinceNanos > self.closeWaitNanos {
                self.pending = nil
                let runID = waiting.request.runID
                actions.append(.send(.refused(.init(runID: runID, code: .policy,
                    message: "Agent \(self.greeting.agentID) was still closing run \(id) after \(DurationText.format(nanos: self.closeWaitNanos)); it serves one run at a time."))))
                actions.append(.send(.closed(.init(runID: runID))))
            }
        case .idle:
            break
        }
        return actions
    }
}
