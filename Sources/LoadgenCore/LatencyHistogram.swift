import Histogram

/// Latency in nanoseconds, in one fixed HDR layout for every worker, agent and run: 1 ns to 1 hour at three
/// significant digits. With one layout, merging is an exact bucket-by-bucket sum (``Histogram/add(_:)``), so
/// cluster percentiles are percentiles of the merged histogram, never averages of percentiles.
public typealias LatencyHistogram = Histogram<UInt64>

extension Histogram where Count == UInt64 {
    /// The largest latency the layout holds; longer latencies are recorded as this value.
    public static var highestLatencyNanos: UInt64 { 3_600_000_000_000 }

    /// An empty histogram in the one layout loadgen uses.
    public static func latency() -> LatencyHistogram {
        LatencyHistogram(lowestDiscernibleValue: 1, highestTrackableValue: highestLatencyNanos,
                         numberOfSignificantValueDigits: .three)
    }

    /// Records a latency, clamping it into the layout so no count is ever dropped.
    @inline(__always)
    public mutating func recordLatency(_ nanos: UInt64) {
        self.record(nanos < Self.highestLatencyNanos ? nanos : Self.highestLatencyNanos)
    }

    /// The latency summary reported everywhere (microseconds).
    public var summary: LatencySummary {
        guard self.totalCount > 0 else { return LatencySummary() }
        func us(_ nanos: UInt64) -> Double { Double(nanos) / 1000 }
        return LatencySummary(
            p50: us(self.valueAtPercentile(50)), p90: us(self.valueAtPercentile(90)),
            p99: us(self.valueAtPercentile(99)), p999: us(self.valueAtPercentile(99.9)),
            max: us(self.maxRecorded), mean: self.mean / 1000)
    }
}

/// Percentiles of a latency histogram, in microseconds.
public struct LatencySummary: Hashable, Sendable, Codable {
    public var p50: Double = 0
    public var p90: Double = 0
    public var p99: Double = 0
    public var p999: Double = 0
    public var max: Double = 0
    public var mean: Double = 0

    public init(p50: Double = 0, p90: Double = 0, p99: Double = 0, p999: Double = 0, max: Double = 0, mean: Double = 0) {
        self.p50 = p50
        self.p90 = p90
        self.p99 = p99
        self.p999 = p999
        self.max = max
        self.mean = mean
    }
}

/// A latency histogram as it travels and is stored: only the nonzero buckets, as `[value, count]` pairs where
/// `value` is the highest value equivalent to the bucket, plus the exact smallest and largest values. Rebuilding
/// records each pair back into the fixed layout, which lands every count in the bucket it came from, so the round
/// trip is exact, down to the minimum and maximum.
///
///     dense:  [0, 0, 0, 7, 0, 0, 2, 0, ...]   33,792 counters
///     sparse: {"buckets": [[value(3), 7], [value(6), 2]], "min": ..., "max": ...}
public struct SparseHistogram: Hashable, Sendable, Codable {
    public var buckets: [[UInt64]]
    public var min: UInt64
    public var max: UInt64

    public init(buckets: [[UInt64]] = [], min: UInt64 = 0, max: UInt64 = 0) {
        self.buckets = buckets
        self.min = min
        self.max = max
    }

    public init(_ histogram: LatencyHistogram) {
        var pairs: [[UInt64]] = []
        if histogram.totalCount > 0 {
            for bucket in histogram.recordedValues() {
                pairs.append([bucket.value, bucket.count])
            }
        }
        self.buckets = pairs
        self.min = histogram.totalCount > 0 ? histogram.min : 0
        self.max = histogram.totalCount > 0 ? histogram.maxRecorded : 0
    }

    public var isEmpty: Bool { self.buckets.isEmpty }

    /// The value at a percentile (0-100), read straight from the sparse buckets, as the dense histogram would
    /// answer it: the bucket's highest equivalent value, capped at the exact maximum.
    public func valueAtPercentile(_ percentile: Double) -> UInt64 {
        let total = self.totalCount
        guard total > 0 else { return 0 }
        if percentile >= 100 { return self.max }
        if percentile <= 0 { return self.min }
        let wanted = Swift.max(1, UInt64((percentile.nextDown * Double(total) / 100).rounded(.up)))
        var seen: UInt64 = 0
        for pair in self.buckets where pair.count == 2 {
            seen &+= pair[1]
            if seen >= wanted { return Swift.max(Swift.min(pair[0], self.max), self.min) }
        }
        return self.max
    }

    public var totalCount: UInt64 { self.buckets.reduce(0) { $0 &+ ($1.count == 2 ? $1[1] : 0) } }

    /// The dense histogram; malformed pairs are refused rather than guessed at.
    public func histogram() throws(LoadgenError) -> LatencyHistogram {
        var h = LatencyHistogram.latency()
        let top = LatencyHistogram.highestLatencyNanos
        for (i, pair) in self.buckets.enumerated() {
            guard pair.count == 2 else {
                throw .protocolViolation("A latency histogram bucket must be a [value, count] pair; got \(pair.count) numbers.")
            }
            var count = pair[1]
            guard count > 0 else { continue }
            let value = Swift.min(pair[0], top)
            // The exact extremes go into the first and last buckets (they belong there), so min and max survive.
            if i == 0, self.min > 0, h.valuesAreEquivalent(Swift.min(self.min, top), value) {
                h.record(Swift.min(self.min, top))
                count -= 1
            }
            if i == self.buckets.count - 1, count > 0, self.max > 0, h.valuesAreEquivalent(Swift.min(self.max, top), value) {
                h.record(Swift.min(self.max, top))
                count -= 1
            }
            if count > 0 { h.record(value, count: count) }
        }
        return h
    }
}
