/// Everything the coordinator knows about one run: per agent and per phase, the merged tally of the intervals
/// received and the agent's `phase_done`. Pure: the coordinator feeds it messages, and reports are computed from it.
public struct RunAggregate: Sendable {
    public struct PhaseState: Sendable {
        public var tally = Tally()
        public var intervals = 0
        public var lastElapsedNanos: UInt64 = 0
        public var done: WireMessage.PhaseDone?
        public init() {}
    }

    public struct AgentState: Sendable {
        public var agentID: String
        public var host: String
        public var address: String
        public var rttNanos: UInt64
        public var clockOffsetNanos: Int64
        public var status: RunStatus = .running
        public var message: String?
        public var runDirectory: String?
        /// What the agent said when it released the run (files left behind), if anything.
        public var finishedMessage: String?
        public var phases: [Phase: PhaseState] = [:]

        public init(agentID: String, host: String, address: String, rttNanos: UInt64, clockOffsetNanos: Int64) {
            self.agentID = agentID
            self.host = host
            self.address = address
            self.rttNanos = rttNanos
            self.clockOffsetNanos = clockOffsetNanos
        }

        public func phase(_ phase: Phase) -> PhaseState { self.phases[phase] ?? PhaseState() }
    }

    public let request: RunRequest
    public var agents: [AgentState]

    public init(request: RunRequest, agents: [AgentState]) {
        self.request = request
        self.agents = agents
    }

    /// Adds one interval report; returns its tally (for the live view and the store).
    @discardableResult
    public mutating func apply(agent: Int, interval: WireMessage.Interval) throws(LoadgenError) -> Tally {
        let tally = try interval.tally()
        var state = self.agents[agent].phase(interval.phase)
        state.tally.merge(tally)
        state.intervals += 1
        state.lastElapsedNanos = max(state.lastElapsedNanos, interval.elapsedNanos)
        self.agents[agent].phases[interval.phase] = state
        return tally
    }

    public mutating func apply(agent: Int, phaseDone: WireMessage.PhaseDone) {
        var state = self.agents[agent].phase(phaseDone.phase)
        state.done = phaseDone
        self.agents[agent].phases[phaseDone.phase] = state
        if phaseDone.status != .completed, self.agents[agent].status == .running {
            self.agents[agent].status = phaseDone.status
            self.agents[agent].message = phaseDone.message
        }
    }

    /// Marks an agent lost: what it reported is kept, the rest of the run goes on without it.
    public mutating func markLost(agent: Int, message: String) {
        guard self.agents[agent].status == .running || self.agents[agent].status == .completed else { return }
        self.agents[agent].status = .lost
        self.agents[agent].message = message
    }

    /// Ends the agents that are still running: they completed every phase they were asked for.
    public mutating func settle() {
        for i in self.agents.indices where self.agents[i].status == .running {
            self.agents[i].status = .completed
        }
    }

    /// The run's status from its agents': completed when all completed; partial when some were lost and the rest
    /// completed; aborted when stopped; failed otherwise.
    public var status: RunStatus {
        let statuses = self.agents.map(\.status)
        if statuses.allSatisfy({ $0 == .completed || $0 == .running }) { return .completed }
        if statuses.contains(.aborted) { return .aborted }
        if statuses.contains(.failed) { return .failed }
        if statuses.contains(where: { $0 == .completed }) { return .partial }
        return .failed
    }

    /// The cluster's tally of a phase: the exact merge of every agent's.
    public func clusterTally(_ phase: Phase) -> Tally {
        var total = Tally()
        for agent in self.agents { total.merge(agent.phase(phase).tally) }
        return total
    }

    /// A phase's duration on one agent: its own measure when it finished, else how far its reports got.
    public func durationNanos(agent: Int, phase: Phase) -> UInt64 {
        let state = self.agents[agent].phase(phase)
        return state.done?.durationNanos ?? state.lastElapsedNanos
    }

    /// The cluster's duration of a phase: agents start together, so it lasts until the slowest finished.
    public func clusterDurationNanos(_ phase: Phase) -> UInt64 {
        self.agents.indices.map { self.durationNanos(agent: $0, phase: phase) }.max() ?? 0
    }

    public var hasPhase: (Phase) -> Bool {
        { phase in self.agents.contains { $0.phases[phase] != nil } }
    }
}
