import LoadgenCore
import Synchronization

/// A run's stop switch: set once (abort, lost coordinator, a full disk), read by every worker before each operation.
/// Reading it is one relaxed atomic load, the only shared state a worker touches per operation.
public final class StopSignal: Sendable {
    private let flag = Atomic<Bool>(false)
    private let firstReason = Mutex<String?>(nil)

    public init() {}

    @inline(__always)
    public var isRequested: Bool { self.flag.load(ordering: .relaxed) }

    /// Asks every worker to stop; the first reason given is kept.
    public func request(_ reason: String) {
        self.firstReason.withLock { if $0 == nil { $0 = reason } }
        self.flag.store(true, ordering: .relaxed)
    }

    public var reason: String? { self.firstReason.withLock { $0 } }
}

/// What every worker of a phase shares: when to start, how often to hand over, and the stop switch.
public struct WorkerControl: Sendable {
    public let stop: StopSignal
    /// The phase starts at this instant on `CLOCK_MONOTONIC`; workers wait for it.
    public let startAtNanos: UInt64
    /// Workers hand over their tallies each time they pass a multiple of this after the start.
    public let tickNanos: UInt64

    public init(stop: StopSignal, startAtNanos: UInt64, tickNanos: UInt64) {
        self.stop = stop
        self.startAtNanos = startAtNanos
        self.tickNanos = tickNanos
    }

    /// The first tick boundary after `now`.
    @inline(__always)
    public func nextTick(after now: UInt64) -> UInt64 {
        guard now >= self.startAtNanos else { return self.startAtNanos &+ self.tickNanos }
        let ticks = (now - self.startAtNanos) / self.tickNanos + 1
        return self.startAtNanos &+ ticks &* self.tickNanos
    }
}

/// A worker's own tally and when it next hands it over: whole, each time an operation ends past a tick boundary,
/// and once more at the end.
///
/// Latencies wait in a small buffer and go into the tally's histogram only when it fills; at a hand-over what is
/// buffered goes to the sink as it is. A latency histogram is 270 KB once written, so a worker recording straight
/// into its own costs that much: with a thousand threads that each do fewer operations a tick than the buffer
/// holds (a fetch run at high concurrency), no worker writes a histogram at all and only the sink holds one; a
/// busy worker fills its own as before, a buffer at a time.
public struct TickedTally {
    /// Counts, bytes and errors; latencies go through ``recordLatency(_:)``, never straight into its histogram.
    public var tally: Tally
    private var recent: [UInt64] = []
    /// Schedule lags (the open model), buffered as latencies are; no room is reserved until one is recorded.
    private var recentLags: [UInt64] = []
    private var nextTick: UInt64
    private let control: WorkerControl
    private let targetCount: Int
    /// Latencies buffered before they go into the histogram: 8 KB a worker.
    static let bufferedLatencies = 1024

    /// Counting from `now` (the phase has started, or is about to).
    public init(control: WorkerControl, targetCount: Int = 0, now: UInt64 = MonotonicClock.nowNanos()) {
        self.tally = Tally(targetCount: targetCount)
        self.nextTick = control.nextTick(after: now)
        self.control = control
        self.targetCount = targetCount
        self.recent.reserveCapacity(Self.bufferedLatencies)
    }

    /// Counts one operation that succeeded: its bytes and its latency.
    @inline(__always)
    public mutating func recordOperation(bytes: UInt64, latencyNanos: UInt64) {
        self.tally.ops &+= 1
        self.tally.bytes &+= bytes
        self.recordLatency(latencyNanos)
    }

    /// Records one operation's latency (its exact sum at once, its histogram bucket when the buffer is flushed).
    @inline(__always)
    public mutating func recordLatency(_ nanos: UInt64) {
        self.tally.latencySumNanos &+= nanos
        self.recent.append(nanos)
        if self.recent.count == Self.bufferedLatencies { self.flushLatencies() }
    }

    /// Counts one request, its latency buffered.
    @inline(__always)
    mutating func record(_ result: Result<FetchResponse, FetchFailure>, urlIndex: Int, latencyNanos: UInt64) {
        if self.tally.count(result, urlIndex: urlIndex, latencyNanos: latencyNanos) { self.recordLatency(latencyNanos) }
    }

    private mutating func flushLatencies() {
        for nanos in self.recent { self.tally.latency.recordLatency(nanos) }
        self.recent.removeAll(keepingCapacity: true)
    }

    /// Records how late an operation of the open model started.
    @inline(__always)
    public mutating func recordLag(_ lag: ScheduleLag) {
        if self.recentLags.isEmpty { self.recentLags.reserveCapacity(Self.bufferedLatencies) }
        self.recentLags.append(lag.nanos)
        if self.recentLags.count == Self.bufferedLatencies {
            for nanos in self.recentLags { self.tally.recordLag(nanos) }
            self.recentLags.removeAll(keepingCapacity: true)
        }
    }

    /// Hands the tally over when `now` (an operation's end) has passed the next tick boundary.
    @inline(__always)
    public mutating func tick(_ now: UInt64, to sink: any TallySink) {
        guard now >= self.nextTick else { return }
        self.handOver(to: sink)
        self.nextTick = self.control.nextTick(after: now)
    }

    /// Hands over what was counted since the last hand-over and starts afresh.
    public mutating func handOver(to sink: any TallySink) {
        self.recent.withUnsafeBufferPointer { latencies in
            self.recentLags.withUnsafeBufferPointer { lags in sink.handOver(self.tally, latencies: latencies, lags: lags) }
        }
        self.recent.removeAll(keepingCapacity: true)
        self.recentLags.removeAll(keepingCapacity: true)
        self.tally = Tally(targetCount: self.targetCount)
    }
}

/// How one worker's share of a phase ended.
public struct WorkerResult: Sendable, Hashable {
    /// When the worker finished, on `CLOCK_MONOTONIC` (nil if it never reported finishing: a lost worker process).
    public var doneAtNanos: UInt64?
    /// A failure that ended the worker early (a full disk; a crashed worker process), as a sentence.
    public var failure: String?

    public init(doneAtNanos: UInt64?, failure: String? = nil) {
        self.doneAtNanos = doneAtNanos
        self.failure = failure
    }
}

/// Where workers hand over their tallies at each tick and when they finish.
public protocol TallySink: Sendable {
    /// Takes `tally` and the latencies recorded since the last hand-over that are not in its histogram yet (their
    /// sum is already in its `latencySumNanos`), and likewise the open model's schedule lags.
    func handOver(_ tally: Tally, latencies: UnsafeBufferPointer<UInt64>, lags: UnsafeBufferPointer<UInt64>)
}

extension TallySink {
    /// Takes a tally whose latencies are all in its histogram.
    public func handOver(_ tally: Tally) {
        self.handOver(tally, latencies: UnsafeBufferPointer(start: nil, count: 0), lags: UnsafeBufferPointer(start: nil, count: 0))
    }
}

/// How late one operation of the open model started against its due time.
public struct ScheduleLag: Sendable, Hashable {
    public var nanos: UInt64

    public init(nanos: UInt64) {
        self.nanos = nanos
    }
}

extension Tally {
    /// This tally with `latencies` recorded into its histogram, and `lags` into its schedule-lag histogram.
    func adding(_ latencies: UnsafeBufferPointer<UInt64>, lags: UnsafeBufferPointer<UInt64> = UnsafeBufferPointer(start: nil, count: 0)) -> Tally {
        guard !latencies.isEmpty || !lags.isEmpty else { return self }
        var tally = self
        for nanos in latencies { tally.latency.recordLatency(nanos) }
        for nanos in lags { tally.recordLag(nanos) }
        return tally
    }
}

/// The in-process sink: hand-overs merge into one pending tally that the reporter takes each interval.
/// The lock is taken once per worker per tick, never per operation.
public final class TallyMailbox: TallySink {
    /// What was handed over: counters and a dense histogram from threads in this process, plus the sparse
    /// histograms worker processes sent, kept as they came.
    public struct Handed: Sendable {
        public var tally: Tally
        public var sparse: [SparseHistogram] = []
    }

    private let pending: Mutex<Handed>
    private let targetCount: Int

    public init(targetCount: Int = 0) {
        self.targetCount = targetCount
        self.pending = Mutex(Handed(tally: Tally(targetCount: targetCount)))
    }

    /// A worker process's interval: its counters, and its latency histogram in the sparse form it came in (already
    /// validated), which goes on to the coordinator without being made dense.
    public func handOver(counters: Tally, latency: SparseHistogram) {
        self.pending.withLock { pending in
            pending.tally.merge(counters)
            if !latency.isEmpty { pending.sparse.append(latency) }
        }
    }

    public func handOver(_ tally: Tally, latencies: UnsafeBufferPointer<UInt64>, lags: UnsafeBufferPointer<UInt64>) {
        guard !tally.isEmpty || !latencies.isEmpty || !lags.isEmpty else { return }
        self.pending.withLock { pending in
            pending.tally.merge(tally)
            for nanos in latencies { pending.tally.latency.recordLatency(nanos) }
            for nanos in lags { pending.tally.recordLag(nanos) }
        }
    }

    /// Everything handed over since the last call, as it was handed.
    public func take() -> Handed {
        let fresh = Handed(tally: Tally(targetCount: self.targetCount))
        return self.pending.withLock { pending in
            let taken = pending
            pending = fresh
            return taken
        }
    }
}
