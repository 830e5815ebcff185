import LoadgenCore

/// How the coordinator talks to agents, built once at the command line.
public struct CoordinatorConfiguration: Sendable {
    public var loadgenVersion: String
    public var host: String
    /// Proves the shared secret to agents that ask for it; nil when the coordinator holds none.
    public var prover: (any SecretProver)?
    public var heartbeatIntervalNanos: UInt64
    /// An agent silent this long is marked lost (heartbeat replies come every 500 ms).
    public var silenceLimitNanos: UInt64
    /// Agents start a phase this long after the coordinator says so, minus half their round trip, so all start
    /// together without comparing wall clocks.
    public var startDelayNanos: UInt64
    public var handshakeTimeoutNanos: UInt64
    public var prepareTimeoutNanos: UInt64
    public var finishTimeoutNanos: UInt64

    public init(loadgenVersion: String, host: String, prover: (any SecretProver)? = nil,
                heartbeatIntervalNanos: UInt64 = 500_000_000, silenceLimitNanos: UInt64 = 2_000_000_000,
                startDelayNanos: UInt64 = 250_000_000, handshakeTimeoutNanos: UInt64 = 5_000_000_000,
                prepareTimeoutNanos: UInt64 = 60_000_000_000, finishTimeoutNanos: UInt64 = 30_000_000_000) {
        self.loadgenVersion = loadgenVersion
        self.host = host
        self.prover = prover
        self.heartbeatIntervalNanos = heartbeatIntervalNanos
        self.silenceLimitNanos = silenceLimitNanos
        self.startDelayNanos = startDelayNanos
        self.handshakeTimeoutNanos = handshakeTimeoutNanos
        self.prepareTimeoutNanos = prepareTimeoutNanos
        self.finishTimeoutNanos = finishTimeoutNanos
    }
}

/// Receives what happens during a run, for people (the command line renders it).
public protocol RunObserver: Sendable {
    /// Every agent finished its handshake and the plan passed its checks.
    func connected(_ agents: [ConnectedAgent])
    func phaseStarted(_ request: RunRequest, phase: Phase, agents: [ConnectedAgent])
    func progress(_ snapshot: ProgressSnapshot)
    func agentLost(_ agent: ConnectedAgent, message: String)
    func note(_ message: String)
    /// One run of a plan ended (stored, when there is a store).
    func runFinished(_ outcome: RunOutcome)
    /// An agent's interval report, as merged (the metrics page counts it).
    func interval(_ interval: WireMessage.Interval, from agent: ConnectedAgent)
    /// A set of runs (`--runs N`) ended.
    func setFinished(_ summary: SetSummary)
    /// A step of a capacity search ended, judged.
    func searchStep(_ step: SearchSummary.Step)
    /// A capacity search ended.
    func searchFinished(_ summary: SearchSummary)
}

extension RunObserver {
    public func connected(_ agents: [ConnectedAgent]) {}
    public func runFinished(_ outcome: RunOutcome) {}
    public func interval(_ interval: WireMessage.Interval, from agent: ConnectedAgent) {}
    public func setFinished(_ summary: SetSummary) {}
    public func searchStep(_ step: SearchSummary.Step) {}
    public func searchFinished(_ summary: SearchSummary) {}
}

/// Several observers, each told everything in turn (the live view and the metrics page).
public struct RunObservers: RunObserver {
    public let all: [any RunObserver]

    public init(_ all: [any RunObserver]) {
        self.all = all
    }

    public func connected(_ agents: [ConnectedAgent]) { for o in self.all { o.connected(agents) } }
    public func phaseStarted(_ request: RunRequest, phase: Phase, agents: [ConnectedAgent]) {
        for o in self.all { o.phaseStarted(request, phase: phase, agents: agents) }
    }
    public func progress(_ snapshot: ProgressSnapshot) { for o in self.all { o.progress(snapshot) } }
    public func agentLost(_ agent: ConnectedAgent, message: String) { for o in self.all { o.agentLost(agent, message: message) } }
    public func note(_ message: String) { for o in self.all { o.note(message) } }
    public func runFinished(_ outcome: RunOutcome) { for o in self.all { o.runFinished(outcome) } }
    public func interval(_ interval: WireMessage.Interval, from agent: ConnectedAgent) {
        for o in self.all { o.interval(interval, from: agent) }
    }
    public func setFinished(_ summary: SetSummary) { for o in self.all { o.setFinished(summary) } }
    public func searchStep(_ step: SearchSummary.Step) { for o in self.all { o.searchStep(step) } }
    public func searchFinished(_ summary: SearchSummary) { for o in self.all { o.searchFinished(summary) } }
}

/// Keeps runs (the SQLite store). Interval reports arrive on the coordinator's loop and must not slow it: an
/// implementation queues them and writes in batches.
public protocol RunRecorder: Sendable {
    func runStarted(_ request: RunRequest, agents: [ConnectedAgent], startedAtWallNanos: UInt64) async throws(LoadgenError)
    func intervalReceived(runID: String, agent: ConnectedAgent, interval: WireMessage.Interval, latency: IntervalLatency,
                          receivedAtWallNanos: UInt64)
    func runEnded(_ report: RunReport, aggregate: RunAggregate) async throws(LoadgenError)
    /// A set of runs begins (`--runs`, a capacity search), and ends with its result as JSON.
    func setStarted(id: String, kind: String, label: String?, workload: WorkloadKind, modes: [ExecutionMode],
                    requestJSON: String) async throws(LoadgenError)
    func setEnded(id: String, resultJSON: String) async throws(LoadgenError)
}

extension RunRecorder {
    public func setStarted(id: String, kind: String, label: String?, workload: WorkloadKind, modes: [ExecutionMode],
                           requestJSON: String) async throws(LoadgenError) {}
    public func setEnded(id: String, resultJSON: String) async throws(LoadgenError) {}
}
