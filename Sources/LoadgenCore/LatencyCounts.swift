/// A coordinator's running sum of latency histograms: the counters of loadgen's one HDR layout (1 ns to 1 h, three
/// significant digits), indexed exactly as ``LatencyHistogram`` indexes them, merged into with plain array adds.
///
/// Merging an interval into a `Histogram` costs a `record` per bucket (index arithmetic, a uniqueness check, min and
/// max upkeep); with hundreds of agents each sending thousands of buckets a second, that was most of the
/// coordinator's work. Here a bucket costs one index computation and one add. ``histogram()`` gives the
/// `Histogram` back, bucket for bucket, whenever percentiles are wanted. Tests check the index arithmetic against
/// the library's own.
public struct LatencyCounts: Sendable {
    // The layout's constants for lowestDiscernibleValue 1 and three significant digits: 2048 sub-buckets, half of
    // them new in each bucket after the first (see Histogram.init).
    static let subBucketHalfCountMagnitude = 10
    static let subBucketHalfCount = 1 << subBucketHalfCountMagnitude
    static let subBucketMask: UInt64 = (1 << (subBucketHalfCountMagnitude + 1)) - 1
    static let leadingZeroCountBase = 64 - (subBucketHalfCountMagnitude + 1)
    static let length = index(of: LatencyHistogram.highestLatencyNanos) + 1

    /// The counters from index `base` on: only the window the values seen so far span (latencies of one run
    /// cover a few powers of two, a few thousand of the layout's 33,792 counters), so a coordinator holding a sum
    /// per agent and phase for a thousand agents holds megabytes, not the quarter of a gigabyte full layouts took.
    ///
    /// The counters are 32-bit until one would pass 2^32 - 1, then 64-bit (a bucket of one agent's phase passes four
    /// billion only in runs of hours at a million operations a second): half the memory, exact either way.
    private var narrow: [UInt32] = []
    private var wide: [UInt64] = []
    private var isWide = false
    private var base = 0
    public private(set) var total: UInt64 = 0
    public private(set) var min: UInt64 = .max
    public private(set) var max: UInt64 = 0

    public init() {}

    /// Counters held (the window's width), for memory checks.
    public var heldCounters: Int { self.isWide ? self.wide.count : self.narrow.count }

    /// Bytes the counters take.
    public var heldBytes: Int { self.isWide ? 8 * self.wide.count : 4 * self.narrow.count }

    /// Widens the window to hold the counters `low...high`, in steps of 1024 (half a power of two).
    private mutating func cover(_ low: Int, _ high: Int) {
        let step = Self.subBucketHalfCount
        let held = self.heldCounters
        let currentEnd = self.base + held
        let wantLow = Swift.max(0, (held == 0 ? low : Swift.min(low, self.base)) / step * step)
        let wantEnd = Swift.min(Self.length, ((held == 0 ? high : Swift.max(high, currentEnd - 1)) / step + 1) * step)
        guard held == 0 || wantLow < self.base || wantEnd > currentEnd else { return }
        let offset = self.base - wantLow
        if self.isWide {
            self.wide = Self.widened(self.wide, count: wantEnd - wantLow, offset: offset)
        } else {
            self.narrow = Self.widened(self.narrow, count: wantEnd - wantLow, offset: offset)
        }
        self.base = wantLow
    }

    private static func widened<Counter: FixedWidthInteger>(_ old: [Counter], count: Int, offset: Int) -> [Counter] {
        var out = [Counter](repeating: 0, count: count)
        guard !old.isEmpty else { return out }
        out.withUnsafeMutableBufferPointer { out in
            old.withUnsafeBufferPointer { old in
                for i in 0..<old.count { out[offset + i] = old[i] }
            }
        }
        return out
    }

    /// Moves to 64-bit counters.
    private mutating func promote() {
        guard !self.isWide else { return }
        self.wide = self.narrow.map { UInt64($0) }
        self.narrow = []
        self.isWide = true
    }

    @inline(__always)
    static func clampedIndex(_ value: UInt64) -> Int {
        let top = LatencyHistogram.highestLatencyNanos
        return index(of: value < top ? value : top)
    }

    /// The counter a value falls in (`Histogram.countsIndexForValue` for this layout).
    @inline(__always)
    static func index(of value: UInt64) -> Int {
        let bucket = leadingZeroCountBase - (value | subBucketMask).leadingZeroBitCount
        let subBucket = Int(truncatingIfNeeded: value >> UInt64(bucket))
        return ((bucket + 1) << subBucketHalfCountMagnitude) + (subBucket - subBucketHalfCount)
    }

    /// The highest value that falls in a counter.
    static func highestValue(at index: Int) -> UInt64 {
        var bucket = (index >> subBucketHalfCountMagnitude) - 1
        var subBucket = (index & (subBucketHalfCount - 1)) + subBucketHalfCount
        if bucket < 0 {
            subBucket -= subBucketHalfCount
            bucket = 0
        }
        let lowest = UInt64(subBucket) << UInt64(bucket)
        return lowest + (UInt64(1) << UInt64(bucket)) - 1
    }

    public var isEmpty: Bool { self.total == 0 }

    /// Adds a sparse histogram in one pass and reads the given percentiles of it on the way.
    /// - Parameter expectedTotal: the number of values the histogram holds, when known (an interval's `ops`); the
    ///   percentiles are read against it and the buckets must add up to it. Zero: counted first.
    /// - Returns: the value at each percentile (0 when the histogram is empty).
    @discardableResult
    public mutating func add(_ sparse: SparseHistogram, percentiles: [Double] = [], expectedTotal: UInt64 = 0)
        throws(LoadgenError) -> [UInt64]
    {
        let total = expectedTotal > 0 || percentiles.isEmpty ? expectedTotal : sparse.totalCount
        // The window is widened first to what the histogram says it spans; a bucket outside that (a sender's min
        // or max that is off) widens it on a second pass.
        if sparse.max >= sparse.min, !sparse.isEmpty {
            self.cover(Self.clampedIndex(sparse.min), Self.clampedIndex(sparse.max))
        }
        var reader = PercentileReader(min: sparse.min, max: sparse.max, total: total, percentiles: percentiles)
        var pass = self.stream(sparse, reader: reader)
        if pass.outside || pass.overflowAt != nil {
            // A bucket fell outside the window, or would pass a 32-bit counter: take back this pass, widen, again.
            self.undo(sparse, upTo: pass.overflowAt)
            if pass.outside { self.cover(pass.lowest, pass.highest) }
            if pass.overflowAt != nil { self.promote() }
            pass = self.stream(sparse, reader: reader)
        }
        reader = pass.reader
        if let refusal = reader.refusal(decoded: pass.ok, expectedTotal: expectedTotal) {
            // The buckets went straight into the counters: take back what was added. The same pairs stream again, up
            // to the same point, so a refused histogram leaves no trace.
            self.undo(sparse, upTo: pass.overflowAt)
            throw refusal
        }
        if pass.overflowAt != nil {
            self.undo(sparse, upTo: pass.overflowAt)
            throw .protocolViolation("A latency histogram's counts, added to what was received before, pass what 64 bits hold.")
        }
        if reader.seen > 0 {
            self.total &+= reader.seen
            self.min = Swift.min(self.min, sparse.min)
            self.max = Swift.max(self.max, sparse.max)
        }
        return reader.finish()
    }

    private struct Pass {
        var ok: Bool
        var reader: PercentileReader
        var outside: Bool
        var lowest: Int
        var highest: Int
        /// How many buckets went in before one would have passed a 32-bit counter (none went in after it).
        var overflowAt: Int?
    }

    private mutating func stream(_ sparse: SparseHistogram, reader: PercentileReader) -> Pass {
        let base = self.base
        if self.isWide {
            return self.wide.withUnsafeMutableBufferPointer { counts in Self.stream(sparse, into: counts, base: base, reader: reader) }
        }
        return self.narrow.withUnsafeMutableBufferPointer { counts in Self.stream(sparse, into: counts, base: base, reader: reader) }
    }

    @inline(__always)
    private static func stream<Counter: FixedWidthInteger & UnsignedInteger>(
        _ sparse: SparseHistogram, into counts: UnsafeMutableBufferPointer<Counter>, base: Int, reader: PercentileReader
    ) -> Pass {
        var sink = CountsSink(counts: counts, base: base, reader: reader)
        let ok = sparse.forEachBucket(into: &sink)
        return Pass(ok: ok, reader: sink.reader, outside: sink.outside, lowest: sink.lowest, highest: sink.highest,
                    overflowAt: sink.overflowAt)
    }

    /// Takes back what ``stream(_:reader:)`` added (the buckets inside the window, before any overflow).
    private mutating func undo(_ sparse: SparseHistogram, upTo limit: Int?) {
        let base = self.base
        let limit = limit ?? .max
        if self.isWide {
            self.wide.withUnsafeMutableBufferPointer { counts in
                var undo = UndoSink(counts: counts, base: base, limit: limit)
                _ = sparse.forEachBucket(into: &undo)
            }
        } else {
            self.narrow.withUnsafeMutableBufferPointer { counts in
                var undo = UndoSink(counts: counts, base: base, limit: limit)
                _ = sparse.forEachBucket(into: &undo)
            }
        }
    }

    /// The counters as 64-bit values (the window's).
    private var counters: [UInt64] { self.isWide ? self.wide : self.narrow.map { UInt64($0) } }

    /// Adds another running sum.
    public mutating func add(_ other: LatencyCounts) {
        guard other.total > 0, other.heldCounters > 0 else { return }
        // Sums of sums (the cluster's, at report time) are 64-bit.
        self.promote()
        self.cover(other.base, other.base + other.heldCounters - 1)
        let offset = other.base - self.base
        let theirs = other.counters
        self.wide.withUnsafeMutableBufferPointer { mine in
            theirs.withUnsafeBufferPointer { theirs in
                for i in 0..<theirs.count { mine[offset + i] &+= theirs[i] }
            }
        }
        self.total &+= other.total
        self.min = Swift.min(self.min, other.min)
        self.max = Swift.max(self.max, other.max)
    }

    /// The nonzero counters, as the sparse form.
    public var sparse: SparseHistogram {
        var values: [UInt64] = []
        var counts: [UInt64] = []
        for (index, count) in self.counters.enumerated() where count > 0 {
            values.append(Self.highestValue(at: self.base + index))
            counts.append(count)
        }
        return SparseHistogram(values: values, counts: counts, min: self.total > 0 ? self.min : 0, max: self.max)
    }

    /// The same counts as a `Histogram`.
    public func histogram() -> LatencyHistogram {
        // The sparse form of our own counters is well formed by construction.
        (try? self.sparse.histogram()) ?? LatencyHistogram.latency()
    }
}

/// Reads percentiles from buckets streaming by in ascending order.
struct PercentileReader {
    let min: UInt64
    let max: UInt64
    let thresholds: [UInt64]
    var results: [UInt64]
    var next = 0
    /// `thresholds[next]`, or the most a count can be when all are read: one compare per bucket.
    var nextThreshold: UInt64
    var seen: UInt64 = 0
    var taken = false
    var previous: UInt64 = 0
    var unordered = false
    /// The sum of value × count so far; past half of what 64 bits hold, iterating the histogram (which sums the
    /// buckets' highest equivalent values, slightly above these) would overflow, so such counts are refused.
    var volume: UInt64 = 0
    var tooLarge = false

    init(min: UInt64, max: UInt64, total: UInt64, percentiles: [Double]) {
        self.min = min
        self.max = max
        self.thresholds = percentiles.map { p in
            p >= 100 ? UInt64.max : p <= 0 ? 0 : Swift.max(1, UInt64((p.nextDown * Double(total) / 100).rounded(.up)))
        }
        self.results = Array(repeating: 0, count: percentiles.count)
        self.nextThreshold = self.thresholds.first ?? .max
    }

    @inline(__always)
    mutating func take(_ value: UInt64, _ count: UInt64) {
        if self.taken, value <= self.previous { self.unordered = true }
        self.taken = true
        self.previous = value
        let (seen, countOverflow) = self.seen.addingReportingOverflow(count)
        let (product, productOverflow) = value.multipliedReportingOverflow(by: count)
        let (volume, volumeOverflow) = self.volume.addingReportingOverflow(product)
        if countOverflow || productOverflow || volumeOverflow || volume > UInt64.max >> 1 { self.tooLarge = true }
        self.seen = seen
        self.volume = volume
        if self.seen >= self.nextThreshold { self.cross(value) }
    }

    private mutating func cross(_ value: UInt64) {
        while self.next < self.thresholds.count, self.thresholds[self.next] <= self.seen {
            self.results[self.next] = self.thresholds[self.next] == 0 ? self.min : Swift.max(Swift.min(value, self.max), self.min)
            self.next += 1
        }
        self.nextThreshold = self.next < self.thresholds.count ? self.thresholds[self.next] : .max
    }

    /// Why the buckets that went by cannot be taken: not decodable, not ascending, or not adding up to
    /// `expectedTotal` (when that is known); nil when they can.
    func refusal(decoded: Bool, expectedTotal: UInt64) -> LoadgenError? {
        if !decoded {
            return .protocolViolation("A latency histogram's buckets are not whole, ascending (value delta, count) pairs.")
        }
        if self.unordered { return .protocolViolation("Latency histogram buckets must be in ascending order.") }
        if self.tooLarge {
            return .protocolViolation("A latency histogram's counts are too large: its values, each times its count, add up past what 64 bits hold.")
        }
        if expectedTotal > 0, self.seen != expectedTotal {
            return .protocolViolation("A latency histogram holds \(self.seen) values where \(expectedTotal) were reported.")
        }
        return nil
    }

    mutating func finish() -> [UInt64] {
        while self.next < self.thresholds.count {
            self.results[self.next] = self.seen > 0 ? self.max : 0
            self.next += 1
        }
        return self.results
    }
}

/// Adds decoded buckets straight into the counters (a window from `base`) and reads percentiles on the way; a
/// bucket outside the window is noted, not added; one that would pass its counter stops the adding there.
private struct CountsSink<Counter: FixedWidthInteger & UnsignedInteger>: BucketSink {
    let counts: UnsafeMutableBufferPointer<Counter>
    let base: Int
    var reader: PercentileReader
    var outside = false
    var lowest = Int.max
    var highest = 0
    var taken = 0
    var overflowAt: Int?

    @inline(__always)
    mutating func take(_ value: UInt64, _ count: UInt64) {
        let index = LatencyCounts.clampedIndex(value)
        self.lowest = Swift.min(self.lowest, index)
        self.highest = Swift.max(self.highest, index)
        let slot = index &- self.base
        if self.overflowAt == nil {
            if slot >= 0, slot < self.counts.count {
                let (sum, overflow) = self.counts[slot].addingReportingOverflow(Counter(truncatingIfNeeded: count))
                if overflow || count > UInt64(Counter.max) {
                    self.overflowAt = self.taken
                } else {
                    self.counts[slot] = sum
                }
            } else {
                self.outside = true
            }
        }
        self.taken += 1
        self.reader.take(value, count)
    }
}

/// Takes back what ``CountsSink`` added, bucket for bucket: those inside the window among the first `limit`.
private struct UndoSink<Counter: FixedWidthInteger & UnsignedInteger>: BucketSink {
    let counts: UnsafeMutableBufferPointer<Counter>
    let base: Int
    let limit: Int
    var taken = 0

    mutating func take(_ value: UInt64, _ count: UInt64) {
        defer { self.taken += 1 }
        guard self.taken < self.limit else { return }
        let slot = LatencyCounts.clampedIndex(value) &- self.base
        if slot >= 0, slot < self.counts.count { self.counts[slot] &-= Counter(truncatingIfNeeded: count) }
    }
}
