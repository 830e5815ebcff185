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

    public init(index: Int, address: String, agentID: String, host: String, cores: Int, loadgenVersion: String,
                policy: AgentPolicySummary, openFileLimit: UInt64?, rttNanos: UInt64, clockOffsetNanos: Int64) {
        self.index = index
        self.address = address
        self.agentID = agentID
        self.host = host
        self.cores = cores
        self.loadgenVersion = loadgenVersion
        self.policy = policy
        self.openFileLimit = openFileLimit
        self.rttNanos = rttNanos
        self.clockOffsetNanos = clockOffsetNanos
    }
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

