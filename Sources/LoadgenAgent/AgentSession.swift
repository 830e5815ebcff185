import LoadgenCore
import LoadgenWorkloads
import Synchronization

/// One coordinator's conversation with this agent, over any transport (a TCP connection, or in-process for the
/// embedded agent): the handshake, then runs, with a dead-man switch.
///
///     awaitingHello ──hello──▶ awaitingAuth ──auth (valid proof)──▶ ready ──prepare/start/finish/abort...
///           └───────── anything else, a bad proof, a version mismatch: `error`, then close ─────────┘
///
/// Dead-man switch: while a run is active, silence from the coordinator for ``AgentConfiguration/silenceLimitNanos``
/// (heartbeats come every 500 ms) stops all its load and ends the run; it is never resumed.
public final class AgentSession: Sendable {
    public let configuration: AgentConfiguration
    public let slot: AgentRunSlot
    /// Who is on the other end, for messages and logs.
    public let peer: String

    public init(configuration: AgentConfiguration, slot: AgentRunSlot, peer: String) {
        self.configuration = configuration
        self.slot = slot
        self.peer = peer
    }

    private enum Stage: Sendable {
        case awaitingHello
        case awaitingAuth(coordinatorNonce: String, agentNonce: String)
        case ready
    }

    private struct ActiveRun: Sendable {
        let controller: RunController
        let commands: AsyncStream<RunCommand>.Continuation
    }

    private final class Shared: Sendable {
        let lastHeard = Atomic<UInt64>(MonotonicClock.nowNanos())
        let lastSent = Atomic<UInt64>(0)
        let over = Atomic<Bool>(false)
        let ready = Atomic<Bool>(false)
        let run = Mutex<ActiveRun?>(nil)

        func stopRun(_ reason: String) {
            if let active = self.run.withLock({ $0 }) {
                active.controller.stop.request(reason)
                active.commands.finish()
            }
        }
    }

    /// Serves `inbound` until it ends or the session closes it. `send` delivers a message (false once the peer is
    /// gone); `close` ends the transport, which ends `inbound`.
    public func run(inbound: AsyncStream<WireMessage>, send transportSend: @escaping @Sendable (WireMessage) async -> Bool,
                    close: @escaping @Sendable () -> Void) async {
        let shared = Shared()
        let send: @Sendable (WireMessage) async -> Bool = { message in
            shared.lastSent.store(MonotonicClock.nowNanos(), ordering: .relaxed)
            return await transportSend(message)
        }
        let configuration = self.configuration
        let started = MonotonicClock.nowNanos()

        await withDiscardingTaskGroup { group in
            group.addTask {
                // Watchdog: the handshake deadline, then the dead-man switch.
                while !shared.over.load(ordering: .relaxed) {
                    try? await Task.sleep(for: .milliseconds(100))
                    let now = MonotonicClock.nowNanos()
                    if !shared.ready.load(ordering: .relaxed), now &- started > configuration.handshakeDeadlineNanos {
                        _ = await send(.failure(.init(code: .authentication, message: "The handshake did not finish within \(DurationText.format(nanos: configuration.handshakeDeadlineNanos)).")))
                        close()
                        return
                    }
                    let silent = now &- shared.lastHeard.load(ordering: .relaxed)
                    if silent > configuration.silenceLimitNanos, shared.run.withLock({ $0 != nil }) {
                        shared.stopRun("The coordinator \(self.peer) was silent for \(DurationText.format(nanos: silent)); the run was stopped.")
                    }
                }
            }

            var stage = Stage.awaitingHello
            for await message in inbound {
                shared.lastHeard.store(MonotonicClock.nowNanos(), ordering: .relaxed)
                let keepGoing = await self.handle(message, stage: &stage, shared: shared, group: &group, send: send)
                if !keepGoing {
                    close()
                    break
                }
            }
            shared.over.store(true, ordering: .relaxed)
            shared.stopRun("The connection to the coordinator \(self.peer) closed; the run was stopped.")
        }
    }

    /// Handles one message; false to close the session.
    private func handle(_ message: WireMessage, stage: inout Stage, shared: Shared,
                        group: inout DiscardingTaskGroup, send: @escaping @Sendable (WireMessage) async -> Bool) async -> Bool {
        let configuration = self.configuration
        func fail(_ code: LoadgenError.Code, _ text: String) async -> Bool {
            _ = await send(.failure(.init(code: code, message: text)))
            return false
        }
        switch (stage, message) {
        case (.awaitingHello, .hello(let hello)):
            guard hello.protocolVersion == WireMessage.protocolVersion else {
                return await fail(.authentication, "Agent \(configuration.agentID) speaks loadgen protocol version \(WireMessage.protocolVersion); the coordinator speaks version \(hello.protocolVersion).")
            }
            guard Handshake.isWellFormedNonce(hello.nonce) else {
                return await fail(.authentication, "The coordinator's nonce is not 64 hexadecimal digits.")
            }
            let nonce = Handshake.makeNonce()
            let proof = configuration.prover?.proof(label: Handshake.agentLabel, first: hello.nonce, second: nonce)
            stage = .awaitingAuth(coordinatorNonce: hello.nonce, agentNonce: nonce)
            return await send(.welcome(.init(
                loadgenVersion: configuration.loadgenVersion, agentID: configuration.agentID, host: configuration.host,
                cores: configuration.cores, nonce: nonce, authRequired: configuration.prover != nil, proof: proof)))

        case (.awaitingAuth(let coordinatorNonce, let agentNonce), .auth(let auth)):
            if let prover = configuration.prover {
                guard let proof = auth.proof,
                      prover.verify(proof, label: Handshake.coordinatorLabel, first: agentNonce, second: coordinatorNonce)
                else {
                    return await fail(.authentication, "The coordinator did not prove it holds this agent's secret.")
                }
            }
            stage = .ready
            shared.ready.store(true, ordering: .relaxed)
            return await send(.ready(.init(policy: configuration.policy.summary, openFileLimit: OpenFileBudget.currentLimit)))

        case (.awaitingHello, _), (.awaitingAuth, _):
            return await fail(.authentication, "A \(message.kind.rawValue) message arrived before the handshake finished.")

        case (.ready, .ping(let ping)):
            return await send(.pong(.init(seq: ping.seq, sentNanos: ping.sentNanos, agentWallNanos: MonotonicClock.wallNanos())))

        case (.ready, .heartbeat(let beat)):
            // The coordinator needs to hear from us, not to hear an echo: when something else (an interval) went out
            // in the last 500 ms, that says we are alive, and a cluster of hundreds of agents halves its traffic.
            if MonotonicClock.nowNanos() &- shared.lastSent.load(ordering: .relaxed) < 500_000_000 { return true }
            return await send(.heartbeat(beat))

        case (.ready, .prepare(let prepare)):
            let request = prepare.request
            do {
                try request.validate()
                try configuration.policy.check(request)
            } catch {
                return await send(.refused(.init(runID: request.runID, code: error.code, message: error.message)))
            }
            if let busy = self.slot.claim(runID: request.runID, coordinator: self.peer) {
                return await send(.refused(.init(runID: request.runID, code: .policy,
                                                 message: "Agent \(configuration.agentID) is busy with run \(busy.runID) for \(busy.coordinator); it serves one run at a time.")))
            }
            let controller = RunController(request: request, context: RunContext(
                agentID: configuration.agentID, allowedRoots: configuration.policy.allowedRoots,
                workerExecutable: configuration.workerExecutable, ioUringDisabled: configuration.ioUringDisabled))
            let (commands, continuation) = AsyncStream.makeStream(of: RunCommand.self)
            shared.run.withLock { $0 = ActiveRun(controller: controller, commands: continuation) }
            let slot = self.slot
            group.addTask {
                await controller.run(commands: commands) { message in _ = await send(message) }
                shared.run.withLock { $0 = nil }
                slot.release(runID: request.runID)
            }
            return true

        case (.ready, .start(let start)):
            guard let active = shared.run.withLock({ $0 }), active.controller.request.runID == start.runID else {
                return await fail(.protocolViolation, "A start for run \(start.runID) arrived, but that run is not prepared here.")
            }
            let delay = min(start.delayNanos ?? 0, 10_000_000_000)
            active.commands.yield(.start(start.phase, atNanos: MonotonicClock.nowNanos() &+ delay))
            return true

        case (.ready, .finish(let finish)):
            if let active = shared.run.withLock({ $0 }), active.controller.request.runID == finish.runID {
                active.commands.yield(.finish)
                active.commands.finish()
            }
            return true

        case (.ready, .abort(let abort)):
            if let active = shared.run.withLock({ $0 }), active.controller.request.runID == abort.runID {
                active.controller.stop.request(abort.reason)
            }
            return true

        case (.ready, .failure(let failure)):
            shared.stopRun("The coordinator reported an error: \(failure.message)")
            return false

        case (.ready, _):
            return await fail(.protocolViolation, "An agent does not accept \(message.kind.rawValue) messages.")
        }
    }
}
