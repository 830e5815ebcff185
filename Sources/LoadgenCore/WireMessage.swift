/// The messages coordinator, agents and worker processes exchange, one per frame (see ``FrameCodec``).
///
/// Every message is a JSON object whose `type` names the case and whose other fields are the payload's, in
/// snake_case. `schemas/wire/` describes each type with an example; tests keep the two in step. Unknown types are
/// errors, never skipped.
///
///     coordinator                     agent                       worker process
///        │── hello ──────────────────▶│
///        │◀──────────────── welcome ──│   (version, identity, nonce, proof)
///        │── auth ───────────────────▶│
///        │◀────────────────── ready ──│   nothing else is accepted before this
///        │── ping ──▶ ◀── pong ───────│   round trip and clock offset
///        │── prepare ────────────────▶│── work ──────────────────▶│
///        │◀───────────── prepared ────│◀──────────────── prepared ─│   (or refused, with a sentence)
///        │── start (phase, delay) ───▶│── start (phase, at) ─────▶│
///        │◀──────────── interval ... ─│◀────────────── interval ...│   one per tick
///        │◀──────────── phase_done ───│◀────────────── phase_done ─│
///        │── finish ─────────────────▶│
///        │◀───────────── finished ────│
///        │◀─────────────── closed ────│   the slot is free: the next run may be prepared
///        │── clean (target) ─────────▶│   `loadgen clean --agents`, once ready, at any time
///        │◀────────────── cleaned ────│   what was removed, or the refusal
///        │── heartbeat every 500 ms ─▶│◀─ heartbeat ──            abort stops a run at any time
public enum WireMessage: Sendable, Hashable {
    case hello(Hello)
    case welcome(Welcome)
    case auth(Auth)
    case ready(Ready)
    case ping(Ping)
    case pong(Pong)
    case prepare(Prepare)
    case work(Work)
    case prepared(Prepared)
    case refused(Refused)
    case start(Start)
    case interval(Interval)
    case phaseDone(PhaseDone)
    case finish(Finish)
    case finished(Finished)
    case closed(Closed)
    case clean(Clean)
    case cleaned(Cleaned)
    case heartbeat(Heartbeat)
    case abort(Abort)
    case failure(Failure)

    /// The version of this protocol; a peer speaking another is refused at the handshake.
    public static let protocolVersion = 6

    /// The `type` field of each case.
    public enum Kind: String, CaseIterable, Sendable, Codable {
        case hello, welcome, auth, ready, ping, pong, prepare, work, prepared, refused, start, interval
        case phaseDone = "phase_done"
        case finish, finished, closed, clean, cleaned, heartbeat, abort
        case failure = "error"

        /// How each kind travels since protocol 4: interval reports and heartbeats, nearly all of a big run's frames,
        /// as protobuf (`schemas/wire/frames.proto`); the handshake and the rare control messages as JSON
        /// (`schemas/wire/messages.schema.json`), so captures of them stay readable.
        public var travelsAsJSON: Bool { self != .interval && self != .heartbeat }
    }

    public var kind: Kind {
        switch self {
        case .hello: .hello
        case .welcome: .welcome
        case .auth: .auth
        case .ready: .ready
        case .ping: .ping
        case .pong: .pong
        case .prepare: .prepare
        case .work: .work
        case .prepared: .prepared
        case .refused: .refused
        case .start: .start
        case .interval: .interval
        case .phaseDone: .phaseDone
        case .finish: .finish
        case .finished: .finished
        case .closed: .closed
        case .clean: .clean
        case .cleaned: .cleaned
        case .heartbeat: .heartbeat
        case .abort: .abort
        case .failure: .failure
        }
    }
}

/// A run's phases: the measured operations, then (writes without `--keep`) the timed removal of what they made.
/// The phases of a run, in the order they run. A fetch run has only `main`; a write run makes its `--tree` in
/// `mkdir`, creates its files in `main`, then (with `--phases`) stats and reads them, and removes them in `cleanup` unless it keeps them.
public enum Phase: String, Codable, Sendable, Hashable, CaseIterable {
    case main
    case stat
    case read
    case cleanup
    /// `--tree`: the directory tree, made before `main` creates the files.
    case mkdir
}

/// How a phase or a run ended.
public enum RunStatus: String, Codable, Sendable, Hashable, CaseIterable {
    case running
    case completed
    /// Some agents were lost; what they reported before is kept.
    case partial
    case failed
    case aborted
    /// (per agent) went silent or disconnected.
    case lost
}

extension WireMessage {
    /// Coordinator → agent, first message.
    public struct Hello: Codable, Sendable, Hashable {
        public var protocolVersion: Int
        public var loadgenVersion: String
        public var coordinatorHost: String
        /// 32 random bytes, hex: the challenge the agent's proof must cover.
        public var nonce: String

        public init(protocolVersion: Int = WireMessage.protocolVersion, loadgenVersion: String, coordinatorHost: String,
                    nonce: String) {
            self.protocolVersion = protocolVersion
            self.loadgenVersion = loadgenVersion
            self.coordinatorHost = coordinatorHost
            self.nonce = nonce
        }
    }

    /// Agent → coordinator: who the agent is, its challenge, and its proof of the secret.
    public struct Welcome: Codable, Sendable, Hashable {
        public var protocolVersion: Int
        public var loadgenVersion: String
        public var agentID: String
        public var host: String
        public var cores: Int
        public var nonce: String
        public var authRequired: Bool
        /// HMAC-SHA256(secret, "loadgen-agent" ‖ coordinator nonce ‖ agent nonce), hex; absent without a secret.
        public var proof: String?

        public init(protocolVersion: Int = WireMessage.protocolVersion, loadgenVersion: String, agentID: String,
                    host: String, cores: Int, nonce: String, authRequired: Bool, proof: String?) {
            self.protocolVersion = protocolVersion
            self.loadgenVersion = loadgenVersion
            self.agentID = agentID
            self.host = host
            self.cores = cores
            self.nonce = nonce
            self.authRequired = authRequired
            self.proof = proof
        }
    }

    /// Coordinator → agent: HMAC-SHA256(secret, "loadgen-coordinator" ‖ agent nonce ‖ coordinator nonce), hex.
    public struct Auth: Codable, Sendable, Hashable {
        public var proof: String?
        public init(proof: String?) { self.proof = proof }
    }

    /// Agent → coordinator: authenticated; the agent's policy, for the record.
    public struct Ready: Codable, Sendable, Hashable {
        public var policy: AgentPolicySummary
        /// How many files the agent's process may hold open (its `ulimit -n`, already raised to the hard limit), so
        /// the coordinator can refuse every planned mode that would need more before the first one runs.
        public var openFileLimit: UInt64?
        public init(policy: AgentPolicySummary, openFileLimit: UInt64? = nil) {
            self.policy = policy
            self.openFileLimit = openFileLimit
        }
    }

    public struct Ping: Codable, Sendable, Hashable {
        public var seq: Int
        /// The coordinator's monotonic clock when it sent the ping.
        public var sentNanos: UInt64
        public init(seq: Int, sentNanos: UInt64) {
            self.seq = seq
            self.sentNanos = sentNanos
        }
    }

    public struct Pong: Codable, Sendable, Hashable {
        public var seq: Int
        public var sentNanos: UInt64
        /// The agent's wall clock when it answered.
        public var agentWallNanos: UInt64
        public init(seq: Int, sentNanos: UInt64, agentWallNanos: UInt64) {
            self.seq = seq
            self.sentNanos = sentNanos
            self.agentWallNanos = agentWallNanos
        }
    }

    /// Coordinator → agent: validate this run against the agent's policy and get ready to start it.
    public struct Prepare: Codable, Sendable, Hashable {
        public var request: RunRequest
        public init(request: RunRequest) { self.request = request }
    }

    /// Agent → worker process: its share of a run.
    public struct Work: Codable, Sendable, Hashable {
        public var request: RunRequest
        /// The run directory the agent made (write runs).
        public var runDirectory: String?
        public var agentSeed: UInt64
        public var workerIndex: Int
        /// The share: operation indices `first_index`, `first_index + stride`, ... (`count` of them; nil: until the
        /// run's duration ends).
        public var firstIndex: UInt64
        public var count: UInt64?
        public var stride: UInt64
        /// The agent's destination policy, which the worker applies to every connection of a fetch run.
        public var destinations: DestinationPolicy?

        public init(request: RunRequest, runDirectory: String?, agentSeed: UInt64, workerIndex: Int, firstIndex: UInt64,
                    count: UInt64?, stride: UInt64 = 1, destinations: DestinationPolicy? = nil) {
            self.destinations = destinations
            self.request = request
            self.runDirectory = runDirectory
            self.agentSeed = agentSeed
            self.workerIndex = workerIndex
            self.firstIndex = firstIndex
            self.count = count
            self.stride = stride
        }
    }

    /// Agent → coordinator (and worker → agent): ready to start.
    public struct Prepared: Codable, Sendable, Hashable {
        public var runID: String
        public var runDirectory: String?
        public init(runID: String, runDirectory: String?) {
            self.runID = runID
            self.runDirectory = runDirectory
        }
    }

    /// A request refused before anything started, with the sentence that says why.
    public struct Refused: Codable, Sendable, Hashable {
        public var runID: String?
        public var code: LoadgenError.Code
        public var message: String
        public init(runID: String?, code: LoadgenError.Code, message: String) {
            self.runID = runID
            self.code = code
            self.message = message
        }
    }

    /// Start a phase: after `delay_nanos` (coordinator → agent) or at the monotonic instant `at_nanos` (agent →
    /// worker process, same host, same clock).
    public struct Start: Codable, Sendable, Hashable {
        public var runID: String
        public var phase: Phase
        public var delayNanos: UInt64?
        public var atNanos: UInt64?
        public init(runID: String, phase: Phase, delayNanos: UInt64? = nil, atNanos: UInt64? = nil) {
            self.runID = runID
            self.phase = phase
            self.delayNanos = delayNanos
            self.atNanos = atNanos
        }
    }

    /// What happened in one interval of a phase; intervals sum exactly to the phase.
    public struct Interval: Codable, Sendable, Hashable {
        public var runID: String
        public var phase: Phase
        public var seq: Int
        /// Time since the phase started, on the sender's monotonic clock.
        public var elapsedNanos: UInt64
        public var ops: UInt64
        public var bytes: UInt64
        public var errors: ErrorCounts
        public var errorSamples: [String: String]
        public var latency: SparseHistogram
        /// The exact sum of the latencies in `latency` (for the mean).
        public var latencySumNanos: UInt64
        public var statusClasses: [UInt64]?
        public var redirects: UInt64?
        public var targets: [TargetTally]?
        /// CPU time the agent's process and its worker processes spent in this interval.
        public var cpu: CPUTime?
        /// The open model (`--rate`): how late each operation started against its due time.
        public var scheduleLag: SparseHistogram?

        public init(runID: String, phase: Phase, seq: Int, elapsedNanos: UInt64, tally: Tally) {
            self.runID = runID
            self.phase = phase
            self.seq = seq
            self.elapsedNanos = elapsedNanos
            self.ops = tally.ops
            self.bytes = tally.bytes
            self.errors = tally.errors
            self.errorSamples = Dictionary(uniqueKeysWithValues: tally.errorSamples.map { ($0.key.rawValue, $0.value) })
            self.latency = SparseHistogram(tally.latency)
            self.latencySumNanos = tally.latencySumNanos
            self.statusClasses = tally.statusClasses.allSatisfy { $0 == 0 } ? nil : tally.statusClasses
            self.redirects = tally.redirects == 0 ? nil : tally.redirects
            self.targets = tally.targets.isEmpty ? nil : tally.targets
            self.cpu = tally.cpu.isZero ? nil : tally.cpu
            self.scheduleLag = tally.scheduleLag.flatMap { $0.totalCount == 0 ? nil : SparseHistogram($0) }
        }

        public init(runID: String, phase: Phase, seq: Int, elapsedNanos: UInt64, ops: UInt64, bytes: UInt64,
                    errors: ErrorCounts, errorSamples: [String: String], latency: SparseHistogram, latencySumNanos: UInt64,
                    statusClasses: [UInt64]?, redirects: UInt64?, targets: [TargetTally]?, cpu: CPUTime? = nil,
                    scheduleLag: SparseHistogram? = nil) {
            self.cpu = cpu
            self.scheduleLag = scheduleLag
            self.runID = runID
            self.phase = phase
            self.seq = seq
            self.elapsedNanos = elapsedNanos
            self.ops = ops
            self.bytes = bytes
            self.errors = errors
            self.errorSamples = errorSamples
            self.latency = latency
            self.latencySumNanos = latencySumNanos
            self.statusClasses = statusClasses
            self.redirects = redirects
            self.targets = targets
        }

        /// The interval as a tally, for merging; a malformed histogram is refused.
        public func tally() throws(LoadgenError) -> Tally {
            var t = try self.counters()
            t.latency = try self.latency.histogram()
            if let lag = self.scheduleLag { t.scheduleLag = try lag.histogram() }
            return t
        }

        /// The interval as a tally without its latency histogram (a coordinator streams that into its own), with the
        /// exact latency sum; refused whole if any part is malformed.
        public func counters() throws(LoadgenError) -> Tally {
            var t = Tally()
            t.ops = self.ops
            t.bytes = self.bytes
            t.errors = self.errors
            for (name, sample) in self.errorSamples {
                if let kind = ErrorKind(rawValue: name) { t.errorSamples[kind] = String(sample.prefix(500)) }
            }
            t.latencySumNanos = self.latencySumNanos
            if let classes = self.statusClasses {
                guard classes.count == 5 else {
                    throw .protocolViolation("An interval's status_classes must hold 5 counts (1xx to 5xx); got \(classes.count).")
                }
                t.statusClasses = classes
            }
            t.redirects = self.redirects ?? 0
            t.targets = self.targets ?? []
            t.cpu = self.cpu ?? CPUTime()
            return t
        }
    }

    /// A phase has ended on the sender: its totals (which the intervals sum to) and its timing.
    public struct PhaseDone: Codable, Sendable, Hashable {
        public var runID: String
        public var phase: Phase
        public var status: RunStatus
        /// Why the phase did not complete, as a sentence.
        public var message: String?
        public var ops: UInt64
        public var bytes: UInt64
        public var errors: UInt64
        /// From the phase's start to its end (the slowest worker, plus a final sync if asked for).
        public var durationNanos: UInt64
        /// When the fastest and the slowest worker finished, from the phase's start.
        public var firstDoneNanos: UInt64
        public var lastDoneNanos: UInt64

        public init(runID: String, phase: Phase, status: RunStatus, message: String?, ops: UInt64, bytes: UInt64,
                    errors: UInt64, durationNanos: UInt64, firstDoneNanos: UInt64, lastDoneNanos: UInt64) {
            self.runID = runID
            self.phase = phase
            self.status = status
            self.message = message
            self.ops = ops
            self.bytes = bytes
            self.errors = errors
            self.durationNanos = durationNanos
            self.firstDoneNanos = firstDoneNanos
            self.lastDoneNanos = lastDoneNanos
        }
    }

    /// Coordinator → agent: the run is over; release it (remove the emptied run directory unless kept).
    public struct Finish: Codable, Sendable, Hashable {
        public var runID: String
        public init(runID: String) { self.runID = runID }
    }

    public struct Finished: Codable, Sendable, Hashable {
        public var runID: String
        /// What is left on disk, if anything, as a sentence.
        public var message: String?
        public init(runID: String, message: String?) {
            self.runID = runID
            self.message = message
        }
    }

    /// Agent → coordinator: the run is closed and its slot free (its executor, worker processes and ring are gone),
    /// so the agent takes a new prepare at once. Sent after ``Finished``; a coordinator starts its next run only
    /// when every agent of the last one has said this.
    public struct Closed: Codable, Sendable, Hashable {
        public var runID: String
        public init(runID: String) { self.runID = runID }
    }

    /// Coordinator → agent (`loadgen clean --agents`): remove the run directories killed runs left under `target`,
    /// which must lie under the agent's allowed roots. Only marked directories no live run holds go.
    public struct Clean: Codable, Sendable, Hashable {
        public var target: String
        /// Remove runs kept with `--keep` too.
        public var includeKept: Bool
        /// List only; remove nothing.
        public var dryRun: Bool
        public init(target: String, includeKept: Bool, dryRun: Bool) {
            self.target = target
            self.includeKept = includeKept
            self.dryRun = dryRun
        }
    }

    /// Agent → coordinator: what a clean did, or why it was refused (the target outside the policy, missing).
    public struct Cleaned: Codable, Sendable, Hashable {
        public var target: String
        public var report: CleanReport?
        public var refusal: Failure?
        public init(target: String, report: CleanReport?, refusal: Failure?) {
            self.target = target
            self.report = report
            self.refusal = refusal
        }
    }

    public struct Heartbeat: Codable, Sendable, Hashable {
        public var seq: Int
        public init(seq: Int) { self.seq = seq }
    }

    /// Stop the run now and never resume it.
    public struct Abort: Codable, Sendable, Hashable {
        public var runID: String
        public var reason: String
        public init(runID: String, reason: String) {
            self.runID = runID
            self.reason = reason
        }
    }

    /// A protocol error, sent just before the sender closes the connection.
    public struct Failure: Codable, Sendable, Hashable {
        public var code: LoadgenError.Code
        public var message: String
        public init(code: LoadgenError.Code, message: String) {
            self.code = code
            self.message = message
        }
    }
}

/// An agent's policy as it tells a coordinator (the agent enforces it; this copy is for display and records).
public struct AgentPolicySummary: Codable, Sendable, Hashable {
    public var allowedRoots: [String]
    public var maxFiles: Int
    public var maxBytes: UInt64
    public var maxWorkers: Int
    public var maxDurationNanos: UInt64
    public var maxRate: Double
    /// Where fetch runs may connect (nil from an agent older than this field).
    public var destinations: DestinationPolicy?

    public init(allowedRoots: [String], maxFiles: Int, maxBytes: UInt64, maxWorkers: Int, maxDurationNanos: UInt64,
                maxRate: Double, destinations: DestinationPolicy? = nil) {
        self.destinations = destinations
        self.allowedRoots = allowedRoots
        self.maxFiles = maxFiles
        self.maxBytes = maxBytes
        self.maxWorkers = maxWorkers
        self.maxDurationNanos = maxDurationNanos
        self.maxRate = maxRate
    }
}

// MARK: - Codable

extension WireMessage: Codable {
    private enum TypeKey: String, CodingKey { case type }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: TypeKey.self)
        let name = try container.decode(String.self, forKey: .type)
        guard let kind = Kind(rawValue: name) else {
            throw DecodingError.dataCorruptedError(forKey: .type, in: container,
                                                   debugDescription: "Unknown message type '\(name)'.")
        }
        switch kind {
        case .hello: self = .hello(try Hello(from: decoder))
        case .welcome: self = .welcome(try Welcome(from: decoder))
        case .auth: self = .auth(try Auth(from: decoder))
        case .ready: self = .ready(try Ready(from: decoder))
        case .ping: self = .ping(try Ping(from: decoder))
        case .pong: self = .pong(try Pong(from: decoder))
        case .prepare: self = .prepare(try Prepare(from: decoder))
        case .work: self = .work(try Work(from: decoder))
        case .prepared: self = .prepared(try Prepared(from: decoder))
        case .refused: self = .refused(try Refused(from: decoder))
        case .start: self = .start(try Start(from: decoder))
        case .interval: self = .interval(try Interval(from: decoder))
        case .phaseDone: self = .phaseDone(try PhaseDone(from: decoder))
        case .finish: self = .finish(try Finish(from: decoder))
        case .finished: self = .finished(try Finished(from: decoder))
        case .closed: self = .closed(try Closed(from: decoder))
        case .clean: self = .clean(try Clean(from: decoder))
        case .cleaned: self = .cleaned(try Cleaned(from: decoder))
        case .heartbeat: self = .heartbeat(try Heartbeat(from: decoder))
        case .abort: self = .abort(try Abort(from: decoder))
        case .failure: self = .failure(try Failure(from: decoder))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: TypeKey.self)
        try container.encode(self.kind.rawValue, forKey: .type)
        switch self {
        case .hello(let m): try m.encode(to: encoder)
        case .welcome(let m): try m.encode(to: encoder)
        case .auth(let m): try m.encode(to: encoder)
        case .ready(let m): try m.encode(to: encoder)
        case .ping(let m): try m.encode(to: encoder)
        case .pong(let m): try m.encode(to: encoder)
        case .prepare(let m): try m.encode(to: encoder)
        case .work(let m): try m.encode(to: encoder)
        case .prepared(let m): try m.encode(to: encoder)
        case .refused(let m): try m.encode(to: encoder)
        case .start(let m): try m.encode(to: encoder)
        case .interval(let m): try m.encode(to: encoder)
        case .phaseDone(let m): try m.encode(to: encoder)
        case .finish(let m): try m.encode(to: encoder)
        case .finished(let m): try m.encode(to: encoder)
        case .closed(let m): try m.encode(to: encoder)
        case .clean(let m): try m.encode(to: encoder)
        case .cleaned(let m): try m.encode(to: encoder)
        case .heartbeat(let m): try m.encode(to: encoder)
        case .abort(let m): try m.encode(to: encoder)
        case .failure(let m): try m.encode(to: encoder)
        }
    }
}
