/// The coordinator's view of one run across its agents, as a pure state machine (async-http-client's
/// `HTTPConnectionPool.StateMachine` is the model): events go in (a message, a closed connection, a tick,
/// Ctrl-C, the recorder's answer), actions come out for ``CoordinatorSession`` to carry out. No I/O, no clock of
/// its own: every event comes with the time, so tests drive it through any interleaving without sockets.
///
///     run:    preparing ──all prepared──▶ recording ──stored──▶ phase(main) [──▶ phase(stat)] [──▶ phase(read)]
///             [──▶ phase(cleanup)] ──▶ finishing ──▶ done
///                 └── a refusal, a loss, a timeout, Ctrl-C ──▶ finishing (releases what was prepared) ──▶ done
///
///     agent:  preparing ──▶ prepared ──start──▶ running(phase) ──phase_done──▶ phaseDone(phase) ──▶ ... ──finish──▶
///             finishing ──finished──▶ finished ──closed──▶ closed          (refused ──closed──▶ closed)
///             any state ──silence, a failure, a closed connection──▶ lost (during a phase) or gone (otherwise)
///
/// The run is done only when every agent it sent a prepare to has said `closed` (its slot is free) or is lost or
/// gone, so the next run's prepare never reaches an agent still holding this one. Messages from an agent once it is
/// lost or gone are ignored: what it reported before counts once, nothing after.
public struct RunStateMachine: Sendable {
    public struct Timing: Sendable {
        public var silenceLimitNanos: UInt64
        public var startDelayNanos: UInt64
        public var prepareTimeoutNanos: UInt64
        /// From `finish` to every agent's `closed`.
        public var finishTimeoutNanos: UInt64
        /// How often the live view is updated while a phase runs.
        public var progressIntervalNanos: UInt64

        public init(silenceLimitNanos: UInt64 = 2_000_000_000, startDelayNanos: UInt64 = 250_000_000,
                    prepareTimeoutNanos: UInt64 = 60_000_000_000, finishTimeoutNanos: UInt64 = 30_000_000_000,
                    progressIntervalNanos: UInt64 = 250_000_000) {
            self.silenceLimitNanos = silenceLimitNanos
            self.startDelayNanos = startDelayNanos
            self.prepareTimeoutNanos = prepareTimeoutNanos
            self.finishTimeoutNanos = finishTimeoutNanos
            self.progressIntervalNanos = progressIntervalNanos
        }
    }

    public enum AgentStage: Sendable, Equatable {
        /// Not in this run (lost in an earlier one).
        case absent
        case preparing
        case prepared
        case refused
        case running(Phase)
        case phaseDone(Phase)
        case finishing
        case finished
        case closed
        /// Lost while the run was going: marked in the aggregate, dropped.
        case lost
        /// Stopped talking outside a phase (before the start, or while closing): dropped, the run's status unchanged.
        case gone

        /// Whether the agent still owes this run a `closed`.
        var owesClose: Bool {
            switch self {
            case .absent, .closed, .lost, .gone: false
            default: true
            }
        }
    }

    public enum Stage: Sendable, Equatable {
        case idle
        case preparing(deadline: UInt64)
        /// Every agent prepared; waiting for the recorder to store the run's start.
        case recording
        case phase(Phase, startNanos: UInt64)
        case finishing(deadline: UInt64)
        case done
    }

    public enum Event: Sendable {
        case message(Int, WireMessage)
        /// The agent's connection ended.
        case closed(Int)
        case tick
        case interrupt
        /// The recorder stored the run's start (or there is no recorder).
        case recorderStarted
        case recorderFailed(LoadgenError)
    }

    public enum Action: Sendable {
        case send(Int, WireMessage)
        /// Stop talking to the agent and close its connection.
        case drop(Int)
        /// Store the run's start, then feed ``Event/recorderStarted`` or ``Event/recorderFailed(_:)``.
        case startRecording
        case recordInterval(Int, WireMessage.Interval, IntervalLatency)
        case phaseStarted(Phase, agents: [Int])
        case agentLost(Int, String)
        case progress(ProgressSnapshot)
        case note(String)
        /// The run is over: read ``outcome``.
        case done
    }

    public enum Outcome: Sendable {
        /// Refused before it started: nothing was recorded.
        case refused(LoadgenError)
        /// It started; the aggregate holds what every agent reported.
        case ran(RunAggregate, interrupted: Bool)
    }

    public let request: RunRequest
    public let agents: [ConnectedAgent]
    public let timing: Timing
    public private(set) var stage = Stage.idle
    public private(set) var agentStages: [AgentStage]
    public private(set) var aggregate: RunAggregate
    public private(set) var interrupted = false
    public private(set) var outcome: Outcome?
    private var lastHeard: [UInt64]
    private var refusal: LoadgenError?
    private var abortSent = false
    private var lastProgressNanos: UInt64 = 0
    /// Whether the run's start was stored: its outcome is then the aggregate, never a refusal.
    private var startedRun = false
    /// The agents the current phase was started on.
    private var phaseAgents: [Int] = []
    private let phases: [Phase]

    /// A run of `request` on `participants` (indices into `agents`; the others were lost before).
    public init(request: RunRequest, agents: [ConnectedAgent], participants: [Int], timing: Timing) {
        self.request = request
        self.agents = agents
        self.timing = timing
        self.agentStages = Array(repeating: .absent, count: agents.count)
        self.lastHeard = Array(repeating: 0, count: agents.count)
        for index in participants { self.agentStages[index] = .preparing }
        self.aggregate = RunAggregate(request: request, agents: agents.map {
            RunAggregate.AgentState(agentID: $0.agentID, host: $0.host, address: $0.address, rttNanos: $0.rttNanos,
                                    clockOffsetNanos: $0.clockOffsetNanos, cores: $0.cores)
        })
        self.phases = request.write?.phases ?? [.main]
    }

    private var runID: String { self.request.runID }
    private var embedded: Bool { self.agents.count == 1 && self.agents[0].address == "embedded" }

    private func name(_ index: Int) -> String { self.agents[index].agentID }

    /// The request as agent `place` of `participants` gets it: in a shared target, with its place (its files' names
    /// carry it) and, with `--shift`, its neighbour's, whose files it stats and reads.
    func request(forAgentAt place: Int, of participants: [Int]) -> RunRequest {
        guard var write = self.request.write, write.sharedToken != nil else { return self.request }
        var request = self.request
        write.agentIndex = place
        if write.shift {
            let next = (place + 1) % participants.count
            write.neighbourIndex = next
            write.neighbourAgentID = self.agents[participants[next]].agentID
        }
        request.write = write
        return request
    }

    /// Sends the prepare to every participant.
    public mutating func begin(nowNanos now: UInt64) -> [Action] {
        guard self.stage == .idle else { return [] }
        self.stage = .preparing(deadline: now &+ self.timing.prepareTimeoutNanos)
        var actions: [Action] = []
        let participants = self.agentStages.indices.filter { self.agentStages[$0] == .preparing }
        for (place, index) in participants.enumerated() {
            self.lastHeard[index] = now
            actions.append(.send(index, .prepare(.init(request: self.request(forAgentAt: place, of: participants)))))
        }
        if actions.isEmpty {
            return self.finish(refusal: LoadgenError(.unreachable, "No agent is connected: every agent was lost."), now: now)
        }
        return actions
    }

    public mutating func handle(_ event: Event, nowNanos now: UInt64) -> [Action] {
        if case .done = self.stage { return [] }
        switch event {
        case .message(let index, let message):
            guard self.agentStages[index].owesClose else { return [] }
            self.lastHeard[index] = now
            return self.received(message, from: index, now: now)
        case .closed(let index):
            return self.connectionClosed(index, now: now)
        case .tick:
            return self.tick(now: now)
        case .interrupt:
            return self.interrupt(now: now)
        case .recorderStarted:
            guard self.stage == .recording else { return [] }
            self.startedRun = true
            return self.startPhase(self.phases.first ?? .main, now: now)
        case .recorderFailed(let error):
            guard self.stage == .recording else { return [] }
            return self.finish(refusal: error, now: now)
        }
    }

    // MARK: - Messages

    private mutating func received(_ message: WireMessage, from index: Int, now: UInt64) -> [Action] {
        switch message {
        case .failure(let failure):
            switch self.stage {
            case .phase:
                return self.lose(index, "Agent \(self.name(index)) reported an error: \(failure.message)", now: now)
            case .preparing:
                self.refuse(LoadgenError(.protocolViolation, "Agent \(self.name(index)) failed: \(failure.message)"))
                return self.gone(index, now: now)
            default:
                return self.gone(index, now: now)
            }
        case .heartbeat:
            return []
        default:
            break
        }
        switch (self.agentStages[index], message) {
        case (.preparing, .prepared(let prepared)) where prepared.runID == self.runID:
            self.agentStages[index] = .prepared
            self.aggregate.agents[index].runDirectory = prepared.runDirectory
            return self.afterPrepareAnswer(now: now)
        case (.preparing, .refused(let refused)) where refused.runID == self.runID:
            self.agentStages[index] = .refused
            self.refuse(LoadgenError(refused.code, self.embedded ? refused.message : "Agent \(self.name(index)) refused the run: \(refused.message)"))
            return self.afterPrepareAnswer(now: now)
        case (.finishing, .prepared(let prepared)) where prepared.runID == self.runID:
            // Prepared after the run was called off (it was sent finish already): its directory is removed on finish.
            self.aggregate.agents[index].runDirectory = prepared.runDirectory
            return []
        case (.running, .interval(let interval)) where interval.runID == self.runID,
             (.phaseDone, .interval(let interval)) where interval.runID == self.runID,
             (.finishing, .interval(let interval)) where interval.runID == self.runID:
            do {
                let latency = try self.aggregate.apply(agent: index, interval: interval)
                return [.recordInterval(index, interval, latency)]
            } catch {
                if case .phase = self.stage {
                    return self.lose(index, "Agent \(self.name(index)) sent a malformed interval: \(error.message)", now: now)
                }
                return []
            }
        case (.running(let phase), .phaseDone(let done)) where done.runID == self.runID && done.phase == phase:
            self.aggregate.apply(agent: index, phaseDone: done)
            self.agentStages[index] = .phaseDone(phase)
            return self.afterPhaseAnswer(now: now)
        case (.finishing, .phaseDone(let done)) where done.runID == self.runID:
            // A phase stopped by Ctrl-C reports after the finish went out: its count still stands.
            self.aggregate.apply(agent: index, phaseDone: done)
            return []
        case (.finishing, .finished(let finished)) where finished.runID == self.runID,
             (.refused, .finished(let finished)) where finished.runID == self.runID:
            self.aggregate.agents[index].finishedMessage = finished.message
            if self.agentStages[index] == .finishing { self.agentStages[index] = .finished }
            return []
        case (_, .closed(let closed)) where closed.runID == self.runID:
            switch self.agentStages[index] {
            case .finishing, .finished, .refused:
                self.agentStages[index] = .closed
                return self.afterClose(now: now)
            default:
                // A close before the run was released: the agent let go of it on its own (it stopped). It holds
                // nothing now; for this run it is gone.
                return self.gone(index, now: now)
            }
        default:
            // Late or stray messages (an earlier run's, a finished agent's interval) change nothing.
            return []
        }
    }

    private mutating func refuse(_ error: LoadgenError) {
        if self.refusal == nil { self.refusal = error }
    }

    /// After an agent answered the prepare (or stopped being asked): the run starts when all prepared, or is
    /// called off when any could not.
    private mutating func afterPrepareAnswer(now: UInt64) -> [Action] {
        guard case .preparing = self.stage else { return [] }
        if self.agentStages.contains(.preparing) { return [] }
        if let refusal = self.refusal { return self.finish(refusal: refusal, now: now) }
        self.stage = .recording
        return [.startRecording]
    }

    // MARK: - Phases

    private mutating func startPhase(_ phase: Phase, now: UInt64) -> [Action] {
        // An agent whose last phase was stopped (Ctrl-C, its dead-man switch) runs no further phase.
        let live = self.agentStages.indices.filter {
            switch self.agentStages[$0] {
            case .prepared: true
            case .phaseDone(let last): self.aggregate.agents[$0].phase(last).done?.status != .aborted
            default: false
            }
        }
        guard !live.isEmpty, !self.interrupted else { return self.finish(refusal: nil, now: now) }
        let delay = self.timing.startDelayNanos
        self.stage = .phase(phase, startNanos: now &+ delay)
        self.abortSent = false
        self.lastProgressNanos = now
        self.phaseAgents = live
        var actions: [Action] = [.phaseStarted(phase, agents: live)]
        for index in live {
            self.agentStages[index] = .running(phase)
            let halfTrip = min(self.agents[index].rttNanos / 2, delay)
            actions.append(.send(index, .start(.init(runID: self.runID, phase: phase, delayNanos: delay - halfTrip))))
        }
        return actions
    }

    private mutating func afterPhaseAnswer(now: UInt64) -> [Action] {
        guard case .phase(let phase, _) = self.stage else { return [] }
        if self.agentStages.contains(.running(phase)) { return [] }
        let live = self.agentStages.indices.filter { self.agentStages[$0] == .phaseDone(phase) }
        if phase == .main, !live.isEmpty, live.allSatisfy({ self.aggregate.agents[$0].phase(.main).done?.status == .aborted }) {
            return self.finish(refusal: nil, now: now)
        }
        // Files go into the tree: where an agent could not make its tree, create has nowhere to put them.
        if phase == .mkdir, live.isEmpty || live.contains(where: { self.aggregate.agents[$0].phase(.mkdir).done?.status != .completed }) {
            return self.finish(refusal: nil, now: now)
        }
        guard let position = self.phases.firstIndex(of: phase), position + 1 < self.phases.count, !self.interrupted else {
            return self.finish(refusal: nil, now: now)
        }
        return self.startPhase(self.phases[position + 1], now: now)
    }

    // MARK: - Ending

    /// Sends finish to every agent holding the run and waits for each one's close.
    private mutating func finish(refusal: LoadgenError?, now: UInt64) -> [Action] {
        if let refusal { self.refuse(refusal) }
        if case .finishing = self.stage { return [] }
        if !self.startedRun, self.refusal == nil {
            self.refuse(LoadgenError(.unreachable, "No agent is connected: every agent was lost."))
        }
        self.stage = .finishing(deadline: now &+ self.timing.finishTimeoutNanos)
        var actions: [Action] = []
        for index in self.agentStages.indices {
            switch self.agentStages[index] {
            case .preparing, .prepared, .running, .phaseDone:
                self.agentStages[index] = .finishing
                self.lastHeard[index] = max(self.lastHeard[index], now)
                actions.append(.send(index, .finish(.init(runID: self.runID))))
            default:
                continue
            }
        }
        return actions + self.afterClose(now: now)
    }


    private mutating func afterClose(now: UInt64) -> [Action] {
        guard case .finishing = self.stage else { return [] }
        if self.agentStages.contains(where: \.owesClose) { return [] }
        return self.complete()
    }

    private mutating func complete() -> [Action] {
        self.stage = .done
        if self.startedRun {
            self.aggregate.settle()
            if self.interrupted {
                for index in self.aggregate.agents.indices where self.aggregate.agents[index].status == .completed {
                    self.aggregate.agents[index].status = .aborted
                    self.aggregate.agents[index].message = "The run was interrupted (Ctrl-C)."
                }
            }
            self.outcome = .ran(self.aggregate, interrupted: self.interrupted)
        } else {
            self.outcome = .refused(self.refusal ?? LoadgenError(.aborted, "The run was called off."))
        }
        return [.done]
    }

    // MARK: - Losses, silence, Ctrl-C

    /// Marks an agent lost during a phase: what it reported stays, the run goes on without it.
    private mutating func lose(_ index: Int, _ message: String, now: UInt64) -> [Action] {
        guard self.agentStages[index].owesClose else { return [] }
        self.agentStages[index] = .lost
        self.aggregate.markLost(agent: index, message: message)
        return [.agentLost(index, message), .drop(index)] + self.afterLoss(now: now)
    }

    /// Drops an agent outside a phase: it is left out of the rest of the run (and of later runs).
    private mutating func gone(_ index: Int, now: UInt64) -> [Action] {
        guard self.agentStages[index].owesClose else { return [] }
        self.agentStages[index] = .gone
        return [.drop(index)] + self.afterLoss(now: now)
    }

    private mutating func afterLoss(now: UInt64) -> [Action] {
        switch self.stage {
        case .preparing: return self.afterPrepareAnswer(now: now)
        case .phase: return self.afterPhaseAnswer(now: now)
        case .finishing: return self.afterClose(now: now)
        default: return []
        }
    }

    private mutating func connectionClosed(_ index: Int, now: UInt64) -> [Action] {
        guard self.agentStages[index].owesClose else { return [] }
        switch self.stage {
        case .preparing:
            self.refuse(LoadgenError(.unreachable, "Agent \(self.name(index)) closed the connection while preparing the run."))
            return self.gone(index, now: now)
        case .phase, .recording:
            if case .running = self.agentStages[index] {
                return self.lose(index, "Agent \(self.name(index)) closed the connection during the run.", now: now)
            }
            return self.gone(index, now: now)
        default:
            return self.gone(index, now: now)
        }
    }

    private mutating func tick(now: UInt64) -> [Action] {
        var actions: [Action] = []
        for index in self.agentStages.indices where self.agentStages[index].owesClose {
            let silent = now &- self.lastHeard[index]
            guard silent > self.timing.silenceLimitNanos else { continue }
            switch self.stage {
            case .preparing:
                self.refuse(LoadgenError(.unreachable, "Agent \(self.name(index)) went silent while preparing the run."))
                actions += self.gone(index, now: now)
            case .phase:
                if case .running = self.agentStages[index] {
                    actions += self.lose(index, "Agent \(self.name(index)) was silent for \(DurationText.format(nanos: silent)) and was marked lost.", now: now)
                }
            case .finishing:
                actions += self.gone(index, now: now)
            default:
                continue
            }
        }
        switch self.stage {
        case .preparing(let deadline) where now > deadline:
            self.refuse(LoadgenError(.unreachable, "The agents did not prepare the run within \(DurationText.format(nanos: self.timing.prepareTimeoutNanos))."))
            actions += self.finish(refusal: nil, now: now)
        case .finishing(let deadline) where now > deadline:
            for index in self.agentStages.indices where self.agentStages[index].owesClose {
                actions.append(.note("Agent \(self.name(index)) did not close run \(self.runID) within \(DurationText.format(nanos: self.timing.finishTimeoutNanos)); it is left out of later runs."))
                actions += self.gone(index, now: now)
            }
        case .phase(let phase, let startNanos) where now &- self.lastProgressNanos >= self.timing.progressIntervalNanos:
            self.lastProgressNanos = now
            actions.append(.progress(self.snapshot(phase, startNanos: startNanos, now: now)))
        default:
            break
        }
        return actions
    }

    private mutating func interrupt(now: UInt64) -> [Action] {
        let first = !self.interrupted
        self.interrupted = true
        switch self.stage {
        case .preparing, .recording:
            self.refuse(LoadgenError(.aborted, "Interrupted before the run started."))
            return self.finish(refusal: nil, now: now)
        case .phase(let phase, _):
            if first || !self.abortSent {
                self.abortSent = true
                var actions: [Action] = []
                for index in self.agentStages.indices where self.agentStages[index] == .running(phase) {
                    actions.append(.send(index, .abort(.init(runID: self.runID, reason: "The coordinator was interrupted (Ctrl-C)."))))
                }
                return actions + [.note("Interrupted: stopping every agent (Ctrl-C again to quit at once).")]
            }
            return self.finish(refusal: nil, now: now)
        case .finishing:
            // A third Ctrl-C: stop waiting for the agents to close.
            return self.abandon()
        case .idle, .done:
            return []
        }
    }

    /// Ends the run at once, without waiting for the agents' closes (the session itself is ending). The agents
    /// still owing one are gone: they are not asked for another run.
    public mutating func abandon() -> [Action] {
        guard self.stage != .done else { return [] }
        var actions: [Action] = []
        for index in self.agentStages.indices where self.agentStages[index].owesClose {
            self.agentStages[index] = .gone
            actions.append(.drop(index))
        }
        if !self.startedRun, self.refusal == nil { self.refuse(LoadgenError(.aborted, "The run was called off.")) }
        return actions + self.complete()
    }

    private func snapshot(_ phase: Phase, startNanos: UInt64, now: UInt64) -> ProgressSnapshot {
        let live = self.phaseAgents
        var expected: UInt64?
        let count = UInt64(live.count)
        if let write = self.request.write { expected = UInt64(write.files) * count }
        if let total = self.request.fetch?.totalRequests { expected = UInt64(total) * count }
        // After create, the phases act on the files it made.
        if phase != .main { expected = live.reduce(0) { $0 + self.aggregate.agents[$1].ops(.main) } }
        if phase == .mkdir, let tree = self.request.write?.tree { expected = UInt64(tree.nodes) * count }
        return ProgressSnapshot(
            request: self.request, phase: phase, elapsedNanos: now > startNanos ? now - startNanos : 0,
            ops: live.reduce(0) { $0 + self.aggregate.agents[$1].ops(phase) }, expectedOps: expected,
            errors: live.reduce(0) { $0 + self.aggregate.agents[$1].errors(phase) },
            currentRate: live.reduce(0.0) { $0 + (self.aggregate.agents[$1].phases[phase]?.currentRate ?? 0) },
            agentsRunning: self.agentStages.filter { $0 == .running(phase) }.count,
            agentsLost: live.filter { self.agentStages[$0] == .lost }.count)
    }
}
