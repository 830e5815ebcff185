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

/// An agent that finished the handshake.
public struct ConnectedAgent: Sendable, Hashable {
    public var index: Int
    public var address: String
    public var agentID: String
    public var host: String
    public var cores: Int
    public var loadgenVersion: String
    public var policy: AgentPolicySummary
    /// How many files the agent may hold open (nil: it did not say).
    public var openFileLimit: UInt64?
    /// The shortest of the handshake's ping round trips.
    public var rttNanos: UInt64
    /// The agent's wall clock minus the coordinator's, estimated at that round trip (recorded, never used to time).
    public var clockOffsetNanos: Int64
}

/// What the live view sees while a phase runs.
public struct ProgressSnapshot: Sendable {
    public var request: RunRequest
    public var phase: Phase
    public var elapsedNanos: UInt64
    /// Operations done so far across agents, and how many the phase has in all (nil: bounded by time).
    public var ops: UInt64
    public var expectedOps: UInt64?
    public var errors: UInt64
    /// Operations per second over the latest interval.
    public var currentRate: Double
    public var agentsRunning: Int
    public var agentsLost: Int
}

/// Receives what happens during a run, for people (the command line renders it).
public protocol RunObserver: Sendable {
    func phaseStarted(_ request: RunRequest, phase: Phase, agents: [ConnectedAgent])
    func progress(_ snapshot: ProgressSnapshot)
    func agentLost(_ agent: ConnectedAgent, message: String)
    func note(_ message: String)
}

/// Keeps runs (the SQLite store). Interval reports arrive on the coordinator's loop and must not slow it: an
/// implementation queues them and writes in batches.
public protocol RunRecorder: Sendable {
    func runStarted(_ request: RunRequest, agents: [ConnectedAgent], startedAtWallNanos: UInt64) async throws(LoadgenError)
    func intervalReceived(runID: String, agent: ConnectedAgent, interval: WireMessage.Interval, latency: IntervalLatency,
                          receivedAtWallNanos: UInt64)
    func runEnded(_ report: RunReport, aggregate: RunAggregate) async throws(LoadgenError)
}
