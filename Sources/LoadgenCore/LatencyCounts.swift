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

    private var counts: [UInt64]
    public private(set) var total: UInt64 = 0
    public private(set) var min: UInt64 = .max
    public private(set) var max: UInt64 = 0

    public init() {
        self.counts = Array(repeating: 0, count: Self.length)
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
        var reader = PercentileReader(min: sparse.min, max: sparse.max, total: total, percentiles: percentiles)
        let ok = self.counts.withUnsafeMutableBufferPointer { counts -> Bool in
            var sink = CountsSink(counts: counts, reader: reader)
            defer { reader = sink.reader }
            return sparse.forEachBucket(into: &sink)
        }
        if let refusal = reader.refusal(decoded: ok, expectedTotal: expectedTotal) {
            // The buckets went straight into the counters: take back what was added. The same pairs stream again, up
            // to the same point, so a refused histogram leaves no trace.
            self.counts.withUnsafeMutableBufferPointer { counts in
                var undo = UndoSink(counts: counts)
                _ = sparse.forEachBucket(into: &undo)
            }
            throw refusal
        }
        if reader.seen > 0 {
            self.total &+= reader.seen
            self.min = Swift.min(self.min, sparse.min)
            self.max = Swift.max(self.max, sparse.max)
        }
        return reader.finish()
    }

    /// Adds another running sum.
    public mutating func add(_ other: LatencyCounts) {
        guard other.total > 0 else { return }
        self.counts.withUnsafeMutableBufferPointer { mine in
            other.counts.withUnsafeBufferPointer { theirs in
                for i in 0..<mine.count { mine[i] &+= theirs[i] }
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
        for (index, count) in self.counts.enumerated() where count > 0 {
            values.append(Self.highestValue(at: index))
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
            return .protocolViolation("A latency histogram's buckets are not base64 of ascending (value delta, count) varint pairs.")
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

/// Adds decoded buckets straight into the counters and reads percentiles on the way.
private struct CountsSink: BucketSink {
    let counts: UnsafeMutableBufferPointer<UInt64>
    var reader: PercentileReader

    @inline(__always)
    mutating func take(_ value: UInt64, _ count: UInt64) {
        let top = LatencyHistogram.highestLatencyNanos
        self.counts[LatencyCounts.index(of: value < top ? value : top)] &+= count
        self.reader.take(value, count)
    }
}

/// Takes back what ``CountsSink`` added, bucket for bucket.
private struct UndoSink: BucketSink {
    let counts: UnsafeMutableBufferPointer<UInt64>

    mutating func take(_ value: UInt64, _ count: UInt64) {
        let top = LatencyHistogram.highestLatencyNanos
        self.counts[LatencyCounts.index(of: value < top ? value : top)] &-= count
    }
}
