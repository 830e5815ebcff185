import Foundation
import LoadgenCore
import LoadgenWorkloads
import Synchronization

/// One coordinator's conversation with this agent, over any transport (a TCP connection, or in-process for the
/// embedded agent). A thin shell: every message, everything the run emits, the run's end and a 100 ms tick go
/// into an ``AgentSessionStateMachine`` (the handshake, the run's lifecycle with its closing state, the dead-man
/// switch), and the session carries out the actions that come back.
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

    /// A run this session handed to a controller: how to command and stop it.
    private struct ActiveRun: Sendable {
        let controller: RunController
        let commands: AsyncStream<RunCommand>.Continuation
        let stream: AsyncStream<RunCommand>
    }

    private final class Shared: Sendable {
        let machine: Mutex<AgentSessionStateMachine>
        let lastSent = Atomic<UInt64>(0)
        let over = Atomic<Bool>(false)
        let runs = Mutex<[String: ActiveRun]>([:])

        init(machine: AgentSessionStateMachine) { self.machine = Mutex(machine) }
    }

    /// Serves `inbound` until it ends or the session closes it. `send` delivers a message (false once the peer is
    /// gone); `close` ends the transport, which ends `inbound`.
    public func run(inbound: AsyncStream<WireMessage>, send transportSend: @escaping @Sendable (WireMessage) async -> Bool,
                    close: @escaping @Sendable () -> Void) async {
        let configuration = self.configuration
        let greeting = AgentSessionStateMachine.Greeting(
            agentID: configuration.agentID, host: configuration.host, cores: configuration.cores,
            loadgenVersion: configuration.loadgenVersion, nonce: Handshake.makeNonce(),
            ready: .init(policy: configuration.policy.summary, openFileLimit: OpenFileBudget.currentLimit))
        let shared = Shared(machine: AgentSessionStateMachine(
            greeting: greeting, prover: configuration.prover, peer: self.peer, nowNanos: MonotonicClock.nowNanos(),
            silenceLimitNanos: configuration.silenceLimitNanos, handshakeDeadlineNanos: configuration.handshakeDeadlineNanos,
            closeWaitNanos: configuration.closeWaitNanos))
        let send: @Sendable (WireMessage) async -> Bool = { message in
            shared.lastSent.store(MonotonicClock.nowNanos(), ordering: .relaxed)
            return await transportSend(message)
        }

        let (launches, launcher) = AsyncStream.makeStream(of: Launch.self)
        let context = Context(shared: shared, send: send, close: close, launcher: launcher)

        await withDiscardingTaskGroup { group in
            group.addTask {
                // Runs and cleans, each in a task of its own, all awaited before the session ends.
                await withDiscardingTaskGroup { runs in
                    for await launch in launches {
                        switch launch {
                        case .run(let request): runs.addTask { await self.serve(request, context: context) }
                        case .clean(let clean): runs.addTask { await self.clean(clean, context: context) }
                        }
                    }
                }
            }
            group.addTask {
                // The clock: handshake deadline, dead-man switch, and the bound on a prepare waiting for a close.
                while !shared.over.load(ordering: .relaxed) {
                    try? await Task.sleep(for: .milliseconds(100))
                    if shared.over.load(ordering: .relaxed) { break }
                    _ = await self.feed(.tick, context: context)
                }
            }
            for await message in inbound {
                if await !self.feed(.received(message), context: context) {
                    close()
                    break
                }
            }
            shared.over.store(true, ordering: .relaxed)
            _ = await self.feed(.connectionClosed, context: context)
            launcher.finish()
        }
    }

    private enum Launch: Sendable {
        case run(RunRequest)
        case clean(WireMessage.Clean)
    }

    private struct Context: Sendable {
        let shared: Shared
        let send: @Sendable (WireMessage) async -> Bool
        let close: @Sendable () -> Void
        let launcher: AsyncStream<Launch>.Continuation
    }

    /// Feeds one event in and carries its actions out, in order. False once the session closed the connection.
    @discardableResult
    private func feed(_ event: AgentSessionStateMachine.Event, context: Context) async -> Bool {
        let actions = context.shared.machine.withLock { $0.handle(event, nowNanos: MonotonicClock.nowNanos()) }
        var open = true
        for action in actions where await !self.perform(action, context: context) {
            open = false
        }
        return open
    }

    private func perform(_ action: AgentSessionStateMachine.Action, context: Context) async -> Bool {
        let shared = context.shared
        switch action {
        case .send(let message):
            return await context.send(message)
        case .sendAndClose(let message):
            _ = await context.send(message)
            context.close()
            return false
        case .close:
            context.close()
            return false
        case .pong(let ping):
            return await context.send(.pong(.init(seq: ping.seq, sentNanos: ping.sentNanos, agentWallNanos: MonotonicClock.wallNanos())))
        case .answerHeartbeat(let beat):
            // The coordinator needs to hear from us, not to hear an echo: when something else (an interval) went out
            // in the last 500 ms, that says we are alive, and a cluster of hundreds of agents halves its traffic.
            if MonotonicClock.nowNanos() &- shared.lastSent.load(ordering: .relaxed) < 500_000_000 { return true }
            return await context.send(.heartbeat(beat))
        case .prepare(let request):
            let controller = RunController(request: request, context: RunContext(
                agentID: self.configuration.agentID, allowedRoots: self.configuration.policy.allowedRoots,
                workerExecutable: self.configuration.workerExecutable, ioUringDisabled: self.configuration.ioUringDisabled,
                destinations: self.configuration.policy.destinations))
            let (commands, continuation) = AsyncStream.makeStream(of: RunCommand.self)
            shared.runs.withLock { $0[request.runID] = ActiveRun(controller: controller, commands: continuation, stream: commands) }
            context.launcher.yield(.run(request))
            return true
        case .clean(let clean):
            context.launcher.yield(.clean(clean))
            return true
        case .startPhase(let id, let phase, let delay):
            shared.runs.withLock { $0[id] }?.commands.yield(.start(phase, atNanos: MonotonicClock.nowNanos() &+ delay))
            return true
        case .finishRun(let id):
            if let active = shared.runs.withLock({ $0[id] }) {
                active.commands.yield(.finish)
                active.commands.finish()
            }
            return true
        case .stopRun(let id, let reason):
            if let active = shared.runs.withLock({ $0[id] }) {
                active.controller.stop.request(reason)
                if shared.over.load(ordering: .relaxed) { self.slot.markClosing(runID: id) }
            }
            return true
        }
    }

    /// One run from its prepare to its slot's release: the policy check, the claim (waiting for a closing run),
    /// the controller, and then `runEnded`, which sends `closed`.
    private func serve(_ request: RunRequest, context: Context) async {
        guard let active = context.shared.runs.withLock({ $0[request.runID] }) else { return }
        let observer = self.configuration.runObserver
        let emit: @Sendable (WireMessage) async -> Void = { message in
            switch message {
            case .finished, .refused: self.slot.markClosing(runID: request.runID)
            default: break
            }
            observer?.runEmitted(message, request: request)
            await self.feed(.runEmitted(message), context: context)
        }
        defer { context.shared.runs.withLock { _ = $0.removeValue(forKey: request.runID) } }
        do {
            try request.validate()
            try self.configuration.policy.check(request)
            // Every URL's addresses as this host resolves them now, before anything connects (each connection and
            // redirect is checked again during the run).
            if let fetch = request.fetch {
                try DestinationCheck.check(fetch, policy: self.configuration.policy.destinations,
                                           agentID: self.configuration.agentID)
            }
        } catch {
            await emit(.refused(.init(runID: request.runID, code: error.code, message: error.message)))
            await self.feed(.runEnded(request.runID), context: context)
            return
        }
        if let busy = await self.slot.claim(runID: request.runID, coordinator: self.peer, waitNanos: self.configuration.closeWaitNanos) {
            let what = busy.closing ? "was still closing run \(busy.runID) for \(busy.coordinator) after \(DurationText.format(nanos: self.configuration.closeWaitNanos))"
                                    : "is busy with run \(busy.runID) for \(busy.coordinator)"
            await emit(.refused(.init(runID: request.runID, code: .policy,
                                      message: "Agent \(self.configuration.agentID) \(what); it serves one run at a time.")))
            await self.feed(.runEnded(request.runID), context: context)
            return
        }
        if active.controller.stop.isRequested {
            await emit(.refused(.init(runID: request.runID, code: .aborted, message: active.controller.stop.reason ?? "The run was stopped before it was prepared.")))
        } else {
            observer?.runStarted(request)
            await active.controller.run(commands: active.stream, emit: emit)
            observer?.runClosed(request)
        }
        self.slot.release(runID: request.runID)
        await self.feed(.runEnded(request.runID), context: context)
    }

    /// Cleans a target within this agent's allowed roots, on a thread of its own (removing a killed run's 100,000
    /// files takes a while, and the session keeps answering heartbeats meanwhile), then emits `cleaned`.
    private func clean(_ clean: WireMessage.Clean, context: Context) async {
        let roots = self.configuration.policy.allowedRoots
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<CleanReport, LoadgenError>, Never>) in
            Thread {
                continuation.resume(returning: Result { () throws(LoadgenError) in
                    try RunCleaner.clean(target: clean.target, allowedRoots: roots, includeKept: clean.includeKept,
                                         dryRun: clean.dryRun)
                })
            }.start()
        }
        let cleaned: WireMessage.Cleaned
        switch result {
        case .success(let report): cleaned = .init(target: clean.target, report: report, refusal: nil)
        case .failure(let error): cleaned = .init(target: clean.target, report: nil, refusal: .init(code: error.code, message: error.message))
        }
        await self.feed(.runEmitted(.cleaned(cleaned)), context: context)
    }
}
