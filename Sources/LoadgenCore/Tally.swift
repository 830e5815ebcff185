/// What one worker did since its last hand-over: counters, errors by kind and a latency histogram.
///
/// A worker owns its tally outright and touches nothing shared per operation; at each interval tick it hands the
/// tally over whole and starts a fresh one (wrk's per-thread statistics). Tallies merge exactly.
public struct Tally: Sendable {
    /// Operations that succeeded: files created (or removed), responses received.
    public var ops: UInt64 = 0
    /// Bytes written or received by those operations.
    public var bytes: UInt64 = 0
    public var errors = ErrorCounts()
    /// One message per error kind, the first seen.
    public var errorSamples: [ErrorKind: String] = [:]
    public var latency = LatencyHistogram.latency()
    /// The exact sum of the latencies recorded, for the mean.
    public var latencySumNanos: UInt64 = 0
    /// HTTP responses by status class: index 0 is 1xx, 4 is 5xx.
    public var statusClasses = [UInt64](repeating: 0, count: 5)
    /// Redirects followed.
    public var redirects: UInt64 = 0
    /// Per-target figures (fetch runs only), by index into the run's target list.
    public var targets: [TargetTally] = []
    /// CPU time the reporting process spent: set once per interval by whoever reports (the agent for its own
    /// process; a worker process for itself), summed when tallies merge.
    public var cpu = CPUTime()
    /// The open model (`--rate`): how late each operation started against its due time (nil outside it, and until
    /// a worker records one: a histogram is 270 KB).
    public var scheduleLag: LatencyHistogram?

    public init(targetCount: Int = 0) {
        if targetCount > 0 {
            self.targets = Array(repeating: TargetTally(), count: targetCount)
        }
    }

    /// Records one operation's latency.
    @inline(__always)
    public mutating func recordLatency(_ nanos: UInt64) {
        self.latency.recordLatency(nanos)
        self.latencySumNanos &+= nanos
    }

    /// Percentiles, max and mean of the latencies recorded.
    public var latencySummary: LatencySummary { self.latency.summary(sumNanos: self.latencySumNanos) }

    @inline(__always)
    public mutating func recordError(_ kind: ErrorKind, _ message: @autoclosure () -> String) {
        self.errors.add(kind)
        if self.errorSamples[kind] == nil {
            self.errorSamples[kind] = message()
        }
    }

    public var isEmpty: Bool {
        self.ops == 0 && self.bytes == 0 && self.errors.isEmpty && self.latency.totalCount == 0
    }

    public mutating func merge(_ other: Tally) {
        self.ops &+= other.ops
        self.bytes &+= other.bytes
        self.errors.merge(other.errors)
        for (kind, sample) in other.errorSamples where self.errorSamples[kind] == nil {
            self.errorSamples[kind] = sample
        }
        if other.latency.totalCount > 0 {
            self.latency.add(other.latency)
        }
        self.latencySumNanos &+= other.latencySumNanos
        for i in 0..<5 { self.statusClasses[i] &+= other.statusClasses[i] }
        self.redirects &+= other.redirects
        if self.targets.count < other.targets.count {
            self.targets.append(contentsOf: Array(repeating: TargetTally(), count: other.targets.count - self.targets.count))
        }
        for i in other.targets.indices { self.targets[i].merge(other.targets[i]) }
        self.cpu.add(other.cpu)
        if let lag = other.scheduleLag, lag.totalCount > 0 { self.recordLags(lag) }
    }

    /// Adds a schedule-lag histogram to this tally's.
    public mutating func recordLags(_ lags: LatencyHistogram) {
        if self.scheduleLag == nil { self.scheduleLag = lags } else { self.scheduleLag!.add(lags) }
    }

    /// Records one operation's schedule lag.
    public mutating func recordLag(_ nanos: UInt64) {
        if self.scheduleLag == nil { self.scheduleLag = LatencyHistogram.latency() }
        self.scheduleLag!.recordLatency(nanos)
    }
}

/// Per-target counters for a fetch run (kept small: a histogram per target per worker would cost too much).
public struct TargetTally: Hashable, Sendable, Codable {
    public var ops: UInt64 = 0
    public var errors: UInt64 = 0
    public var bytes: UInt64 = 0
    public var latencyNanosSum: UInt64 = 0
    public var latencyNanosMax: UInt64 = 0
    public var statusClasses: [UInt64] = [0, 0, 0, 0, 0]

    public init() {}

    public mutating func merge(_ other: TargetTally) {
        self.ops &+= other.ops
        self.errors &+= other.errors
        self.bytes &+= other.bytes
        self.latencyNanosSum &+= other.latencyNanosSum
        self.latencyNanosMax = max(self.latencyNanosMax, other.latencyNanosMax)
        for i in 0..<min(5, other.statusClasses.count) { self.statusClasses[i] &+= other.statusClasses[i] }
    }

    public var isEmpty: Bool { self.ops == 0 && self.errors == 0 }
}

/// CPU time spent, user and system apart: in a write run the system time of the agent's workers is the file
/// system's work, the load itself, while the user time is the generator's own.
public struct CPUTime: Hashable, Sendable, Codable {
    public var userNanos: UInt64 = 0
    public var systemNanos: UInt64 = 0

    public init(userNanos: UInt64 = 0, systemNanos: UInt64 = 0) {
        self.userNanos = userNanos
        self.systemNanos = systemNanos
    }

    public var totalNanos: UInt64 { self.userNanos &+ self.systemNanos }
    public var isZero: Bool { self.userNanos == 0 && self.systemNanos == 0 }

    public mutating func add(_ other: CPUTime) {
        self.userNanos &+= other.userNanos
        self.systemNanos &+= other.systemNanos
    }

    /// The time spent since `earlier` (a reading of the same clock).
    public func since(_ earlier: CPUTime) -> CPUTime {
        CPUTime(userNanos: self.userNanos &- min(self.userNanos, earlier.userNanos),
                systemNanos: self.systemNanos &- min(self.systemNanos, earlier.systemNanos))
    }
}
