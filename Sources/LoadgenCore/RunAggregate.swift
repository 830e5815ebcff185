/// Everything the coordinator knows about one run: per agent and per phase, the merged tally of the intervals
/// received and the agent's `phase_done`. Pure: the coordinator feeds it messages, and reports are computed from it.
public struct RunAggregate: Sendable {
    public struct PhaseState: Sendable {
        /// Counters, errors and samples; the latency lives in ``latency`` until ``tally`` is asked for.
        var totals = Tally()
        /// The merged latency counters (merging into these is a plain add per bucket).
        public var latency = LatencyCounts()
        /// The open model's schedule lags, merged the same way.
        public var lag = LatencyCounts()
        public var intervals = 0
        public var lastElapsedNanos: UInt64 = 0
        /// The latest interval's operations and length on the agent's own clock, for the live rate.
        var latestOps: UInt64 = 0
        var latestNanos: UInt64 = 0
        public var done: WireMessage.PhaseDone?
        public init() {}

        /// Operations per second in the latest interval, timed by the agent: reports arrive whenever the network
        /// brings them, so counting arrivals in a window of the coordinator's time would swing with their jitter.
        /// Zero once the phase is done.
        public var currentRate: Double {
            guard self.done == nil, self.latestNanos > 0 else { return 0 }
            return Double(self.latestOps) * 1e9 / Double(self.latestNanos)
        }

        /// Everything reported in this phase, latency histogram included.
        public var tally: Tally {
            var tally = self.totals
            tally.latency = self.latency.histogram()
            return tally
        }

        mutating func add(_ interval: WireMessage.Interval) throws(LoadgenError) -> IntervalLatency {
            let counters = try interval.counters()
            // Every successful operation records one latency, so the interval's ops is its histogram's total.
            let read = try self.latency.add(interval.latency, percentiles: [50, 99, 100], expectedTotal: interval.ops)
            if let lag = interval.scheduleLag { try self.lag.add(lag) }
            self.totals.merge(counters)
            self.intervals += 1
            if interval.elapsedNanos > self.lastElapsedNanos {
                self.latestOps = interval.ops
                self.latestNanos = interval.elapsedNanos - self.lastElapsedNanos
                self.lastElapsedNanos = interval.elapsedNanos
            }
            return interval.ops > 0 ? IntervalLatency(p50Nanos: read[0], p99Nanos: read[1], maxNanos: read[2]) : IntervalLatency()
        }
    }

    public struct AgentState: Sendable {
        public var agentID: String
        public var host: String
        public var address: String
        public var rttNanos: UInt64
        public var clockOffsetNanos: Int64
        /// The cores the agent may use (0: unknown), against which its CPU time is judged.
        public var cores: Int = 0
        public var status: RunStatus = .running
        public var message: String?
        public var runDirectory: String?
        /// What the agent said when it released the run (files left behind), if anything.
        public var finishedMessage: String?
        public var phases: [Phase: PhaseState] = [:]

        public init(agentID: String, host: String, address: String, rttNanos: UInt64, clockOffsetNanos: Int64, cores: Int = 0) {
            self.cores = cores
            self.agentID = agentID
            self.host = host
            self.address = address
            self.rttNanos = rttNanos
            self.clockOffsetNanos = clockOffsetNanos
        }

        public func phase(_ phase: Phase) -> PhaseState { self.phases[phase] ?? PhaseState() }

        /// Operations reported so far in a phase (cheap: nothing is copied).
        public func ops(_ phase: Phase) -> UInt64 { self.phases[phase]?.totals.ops ?? 0 }

        /// Errors reported so far in a phase.
        public func errors(_ phase: Phase) -> UInt64 { self.phases[phase]?.totals.errors.total ?? 0 }
    }

    public let request: RunRequest
    public var agents: [AgentState]

    public init(request: RunRequest, agents: [AgentState]) {
        self.request = request
        self.agents = agents
    }

    /// Adds one interval report, merging it in place (no copy of the agent's histogram), and returns the interval's
    /// own p50, p99 and maximum latency (nanoseconds), read on the way.
    @discardableResult
    public mutating func apply(agent: Int, interval: WireMessage.Interval) throws(LoadgenError) -> IntervalLatency {
        try self.agents[agent].phases[interval.phase, default: PhaseState()].add(interval)
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
        var totals = Tally()
        var latency = LatencyCounts()
        for agent in self.agents {
            guard let state = agent.phases[phase] else { continue }
            totals.merge(state.totals)
            latency.add(state.latency)
        }
        totals.latency = latency.histogram()
        return totals
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

    /// Whether any agent reported the phase.
    public func hasPhase(_ phase: Phase) -> Bool {
        self.agents.contains { $0.phases[phase] != nil }
    }
}

/// An interval's own latency figures, as the coordinator reads them while merging it (nil when it recorded none).
public struct IntervalLatency: Sendable, Hashable {
    public var p50Nanos: UInt64?
    public var p99Nanos: UInt64?
    public var maxNanos: UInt64?

    public init(p50Nanos: UInt64? = nil, p99Nanos: UInt64? = nil, maxNanos: UInt64? = nil) {
        self.p50Nanos = p50Nanos
        self.p99Nanos = p99Nanos
        self.maxNanos = maxNanos
    }
}
