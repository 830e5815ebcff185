import LoadgenCore
import Synchronization

/// Everything an agent needs, built once at the command line and passed down.
public struct AgentConfiguration: Sendable {
    public var agentID: String
    public var host: String
    public var cores: Int
    public var loadgenVersion: String
    public var policy: AgentPolicy
    /// Proves the shared secret; nil means no authentication (loopback only, or the embedded agent).
    public var prover: (any SecretProver)?
    /// The `loadgen` binary worker processes run.
    public var workerExecutable: String
    /// Silence from the coordinator for this long stops the run (1.5 s).
    public var silenceLimitNanos: UInt64
    /// A connection must finish its handshake within this long (5 s).
    public var handshakeDeadlineNanos: UInt64
    /// Why io_uring is not to be used on this agent, when it is not.
    public var ioUringDisabled: String?
    /// How long a prepare waits for a closing run to free the slot before it is refused as busy (10 s).
    public var closeWaitNanos: UInt64 = 10_000_000_000
    /// Told of every run this agent serves and of what it sends about it (the metrics page).
    public var runObserver: (any AgentRunObserver)?

    public init(agentID: String, host: String, cores: Int, loadgenVersion: String, policy: AgentPolicy,
                prover: (any SecretProver)?, workerExecutable: String, silenceLimitNanos: UInt64 = 1_500_000_000,
                handshakeDeadlineNanos: UInt64 = 5_000_000_000, ioUringDisabled: String? = nil) {
        self.ioUringDisabled = ioUringDisabled
        self.agentID = agentID
        self.host = host
        self.cores = cores
        self.loadgenVersion = loadgenVersion
        self.policy = policy
        self.prover = prover
        self.workerExecutable = workerExecutable
        self.silenceLimitNanos = silenceLimitNanos
        self.handshakeDeadlineNanos = handshakeDeadlineNanos
    }
}

/// The one run an agent serves at a time, shared by all its sessions: a second coordinator is refused, not queued.
/// A run is *closing* from its last message until its executor is gone; a claim then waits for it, bounded, since
/// the slot is about to be free.
public final class AgentRunSlot: Sendable {
    public struct Holder: Sendable, Equatable {
        public var runID: String
        public var coordinator: String
        public var closing: Bool
    }

    private let holder = Mutex<Holder?>(nil)

    public init() {}

    /// Claims the slot, waiting up to `waitNanos` for a closing run to release it. Nil when claimed; otherwise who
    /// holds it.
    func claim(runID: String, coordinator: String, waitNanos: UInt64) async -> Holder? {
        let deadline = MonotonicClock.nowNanos() &+ waitNanos
        while true {
            let current: Holder? = self.holder.withLock { holder in
                if let current = holder { return current }
                holder = Holder(runID: runID, coordinator: coordinator, closing: false)
                return nil
            }
            guard let current else { return nil }
            guard current.closing, MonotonicClock.nowNanos() < deadline else { return current }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    /// The run sent its last message (or lost its coordinator): it is on its way out.
    func markClosing(runID: String) {
        self.holder.withLock { if $0?.runID == runID { $0?.closing = true } }
    }

    func release(runID: String) {
        self.holder.withLock { if $0?.runID == runID { $0 = nil } }
    }

    public var currentRunID: String? { self.holder.withLock { $0?.runID } }
}

/// Watches the runs an agent serves: the run's start (its slot claimed) and each message it sends about it.
public protocol AgentRunObserver: Sendable {
    func runStarted(_ request: RunRequest)
    func runEmitted(_ message: WireMessage, request: RunRequest)
    /// The run's slot is free again.
    func runClosed(_ request: RunRequest)
}
