import Foundation
import Histogram

/// Latency in nanoseconds, in one fixed HDR layout for every worker, agent and run: 1 ns to 1 hour at three
/// significant digits. With one layout, merging is an exact bucket-by-bucket sum (``Histogram/add(_:)``), so
/// cluster percentiles are percentiles of the merged histogram, never averages of percentiles.
public typealias LatencyHistogram = Histogram<UInt64>

extension Histogram where Count == UInt64 {
    /// The largest latency the layout holds; longer latencies are recorded as this value.
    public static var highestLatencyNanos: UInt64 { 3_600_000_000_000 }

    /// An empty histogram in the one layout loadgen uses. Made once and copied: building one from scratch fills
    /// its 33,792 counters one generic call at a time, while a copy of the empty one is a single memcpy when first
    /// written.
    public static func latency() -> LatencyHistogram {
        emptyLatencyHistogram
    }

    /// Records a latency, clamping it into the layout so no count is ever dropped.
    @inline(__always)
    public mutating func recordLatency(_ nanos: UInt64) {
        self.record(nanos < Self.highestLatencyNanos ? nanos : Self.highestLatencyNanos)
    }

    /// The latency summary reported everywhere (microseconds); the mean comes from the exact sum of latencies,
    /// which the tally keeps (the histogram's own mean is of bucket values, so only approximate).
    public func summary(sumNanos: UInt64) -> LatencySummary {
        guard self.totalCount > 0 else { return LatencySummary() }
        func us(_ nanos: UInt64) -> Double { Double(nanos) / 1000 }
        return LatencySummary(
            p50: us(self.valueAtPercentile(50)), p90: us(self.valueAtPercentile(90)),
            p99: us(self.valueAtPercentile(99)), p999: us(self.valueAtPercentile(99.9)),
            max: us(self.maxRecorded), mean: Double(sumNanos) / Double(self.totalCount) / 1000)
    }
}

private let emptyLatencyHistogram = LatencyHistogram(
    lowestDiscernibleValue: 1, highestTrackableValue: LatencyHistogram.highestLatencyNanos, numberOfSignificantValueDigits: .three)

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

/// A latency histogram as it travels and is stored: only the nonzero buckets, as (value, count) pairs where `value`
/// is the highest value equivalent to the bucket, plus the exact smallest and largest values. Rebuilding records
/// each pair back into the fixed layout, which lands every count in the bucket it came from, so the round trip is
/// exact, down to the minimum and maximum.
///
///     dense:   [0, 0, 0, 7, 0, 0, 2, 0, ...]        33,792 counters
///     sparse:  (v3, 7), (v6, 2)
///     encoded: {"buckets": base64(uvarint(v3 - 0) uvarint(7) uvarint(v6 - v3) uvarint(2)), "max": ..., "min": ...}
///
/// The pairs travel as base64 of LEB128 varints, each value as its distance from the previous one: about five
/// characters a bucket instead of fifteen for decimal text, and no per-element work in the JSON decoder (a
/// coordinator ingesting hundreds of agents spent most of its time there with nested arrays).
public struct SparseHistogram: Hashable, Sendable, Codable {
    /// The buckets as arrays (made from a dense histogram), or nil when only their encoding is held.
    private var arrays: Buckets?
    /// The text encoding as stored, parsed only when needed.
    private var encoded: String?
    /// The binary frame's (value delta, count) varints as received (``init(packed:min:max:)``), read only when
    /// needed: a coordinator streams them straight into its per-agent counts
    /// (``LatencyCounts/add(_:percentiles:expectedTotal:)``) and stores them as they came; an agent forwards them.
    private var packed: Data?
    public var min: UInt64
    public var max: UInt64

    private struct Buckets: Hashable, Sendable {
        var values: [UInt64]
        var counts: [UInt64]
    }

    public init(values: [UInt64] = [], counts: [UInt64] = [], min: UInt64 = 0, max: UInt64 = 0) {
        precondition(values.count == counts.count, "one count per bucket value")
        self.arrays = Buckets(values: values, counts: counts)
        self.encoded = nil
        self.min = min
        self.max = max
    }

    /// A histogram as the binary frames carry it: each bucket's value as its distance from the previous one (the
    /// first from 0), then its count, as LEB128 varints. Checked when read, as the text form is.
    public init(packed: Data, min: UInt64, max: UInt64) {
        self.arrays = nil
        self.packed = packed
        self.min = min
        self.max = max
    }

    /// The same from (value delta, count) pairs (tests).
    init(pairs: [UInt64], min: UInt64, max: UInt64) {
        var bytes = [UInt8]()
        for number in pairs { Self.appendVarint(number, to: &bytes) }
        self.init(packed: Data(bytes), min: min, max: max)
    }

    @inline(__always)
    static func appendVarint(_ number: UInt64, to bytes: inout [UInt8]) {
        var n = number
        while n >= 0x80 {
            bytes.append(UInt8(n & 0x7f) | 0x80)
            n >>= 7
        }
        bytes.append(UInt8(n))
    }

    /// The buckets as the binary frames carry them: as received, or encoded from the arrays.
    public var packedBuckets: Data {
        if let packed { return packed }
        return Data(self.varintBytes)
    }

    /// The (value delta, count) pairs (tests).
    var deltaPairs: [UInt64] {
        var out: [UInt64] = []
        var previous: UInt64 = 0
        var sink = ClosureSink { value, count in
            out.append(value &- previous)
            out.append(count)
            previous = value
        }
        _ = self.forEachBucket(into: &sink)
        return out
    }

    private var varintBytes: [UInt8] {
        let buckets = self.buckets
        var bytes = [UInt8]()
        bytes.reserveCapacity(4 * buckets.values.count)
        var previous: UInt64 = 0
        for i in buckets.values.indices {
            Self.appendVarint(buckets.values[i] &- previous, to: &bytes)
            Self.appendVarint(buckets.counts[i], to: &bytes)
            previous = buckets.values[i]
        }
        return bytes
    }

    public init(_ histogram: LatencyHistogram) {
        var values: [UInt64] = []
        var counts: [UInt64] = []
        if histogram.totalCount > 0 {
            for bucket in histogram.recordedValues() {
                values.append(bucket.value)
                counts.append(bucket.count)
            }
        }
        self.init(values: values, counts: counts, min: histogram.totalCount > 0 ? histogram.min : 0,
                  max: histogram.totalCount > 0 ? histogram.maxRecorded : 0)
    }

    /// Bucket values (each the highest value equivalent to its bucket), ascending. A malformed encoding reads as
    /// no buckets; ``histogram()`` and ``LatencyCounts/add(_:percentiles:expectedTotal:)`` refuse malformed input.
    public var values: [UInt64] { self.buckets.values }
    public var counts: [UInt64] { self.buckets.counts }

    private var buckets: Buckets {
        if let arrays { return arrays }
        var values: [UInt64] = []
        var counts: [UInt64] = []
        if let packed {
            values.reserveCapacity(packed.count / 4)
            counts.reserveCapacity(packed.count / 4)
        }
        var sink = ClosureSink { value, count in
            values.append(value)
            counts.append(count)
        }
        guard self.forEachBucket(into: &sink) else { return Buckets(values: [], counts: []) }
        return Buckets(values: values, counts: counts)
    }

    public static func == (a: SparseHistogram, b: SparseHistogram) -> Bool {
        a.min == b.min && a.max == b.max && a.buckets == b.buckets
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(self.buckets)
        hasher.combine(self.min)
        hasher.combine(self.max)
    }

    public var isEmpty: Bool {
        if let arrays { return arrays.values.isEmpty }
        if let packed { return packed.isEmpty }
        return self.encoded?.isEmpty ?? true
    }

    public var bucketCount: Int { self.values.count }

    public var totalCount: UInt64 { self.counts.reduce(0, &+) }

    /// The JSON text `JSONEncoder` (sorted keys) would make, built directly.
    public var jsonText: String {
        #"{"buckets":"\#(self.bucketText)","max":\#(self.max),"min":\#(self.min)}"#
    }

    /// The buckets encoded: base64 of (value delta, count) LEB128 varint pairs.
    public var bucketText: String {
        if let encoded { return encoded }
        // The binary frames' bytes are the text form's before base64: stored as they came, with no work per bucket.
        if let packed { return Base64.encode(Array(packed)) }
        return Base64.encode(self.varintBytes)
    }

    /// Decodes ``bucketText``; nil when it is not well formed (bad base64, a truncated or overlong varint, values
    /// that do not ascend).
    public static func parseBuckets(_ text: String) -> (values: [UInt64], counts: [UInt64])? {
        var values: [UInt64] = []
        var counts: [UInt64] = []
        values.reserveCapacity(text.utf8.count / 5 + 1)
        counts.reserveCapacity(text.utf8.count / 5 + 1)
        let ok = Self.stream(text) { value, count in
            values.append(value)
            counts.append(count)
        }
        return ok ? (values, counts) : nil
    }

    /// Calls `body` with each (value, count) pair of an encoding, in one pass with no intermediate bytes; false
    /// when the encoding is not well formed (pairs already delivered stay delivered).
    static func stream(_ text: String, _ body: (UInt64, UInt64) -> Void) -> Bool {
        withoutActuallyEscaping(body) { body in
            var sink = ClosureSink(body: body)
            return Self.stream(text, into: &sink)
        }
    }

    /// The same, into a sink the compiler specializes and inlines (the coordinator's merge runs per bucket):
    /// base64 a chunk at a time into a stack buffer, then the varints out of it.
    @inline(__always)
    static func stream<Sink: BucketSink>(_ text: String, into sink: inout Sink) -> Bool {
        var parser = BucketParser()
        let decoded = Base64.decode(text) { chunk in
            parser.feed(chunk, into: &sink)
            return !parser.bad
        }
        return decoded && parser.isComplete
    }

    /// Calls `body` with each (value, count) bucket, in order, without building arrays; false when the encoding is
    /// not well formed (the buckets up to that point were handed over).
    @discardableResult
    public func forEachBucket(_ body: (UInt64, UInt64) -> Void) -> Bool {
        withoutActuallyEscaping(body) { body in
            var sink = ClosureSink(body: body)
            return self.forEachBucket(into: &sink)
        }
    }

    /// Hands each (value, count) bucket to `sink`, from the arrays or straight from the encoding; false when the
    /// encoding is not well formed (the same pairs, up to the same point, every time).
    @inline(__always)
    func forEachBucket<Sink: BucketSink>(into sink: inout Sink) -> Bool {
        if let arrays = self.arrays {
            for i in arrays.values.indices { sink.take(arrays.values[i], arrays.counts[i]) }
            return true
        }
        if let packed = self.packed {
            return packed.withUnsafeBytes { raw in
                var parser = BucketParser()
                parser.feed(raw.bindMemory(to: UInt8.self), into: &sink)
                return parser.isComplete
            }
        }
        guard let encoded = self.encoded else { return true }
        return Self.stream(encoded, into: &sink)
    }

    private enum CodingKeys: String, CodingKey { case buckets, min, max }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let text = try container.decode(String.self, forKey: .buckets)
        guard text.utf8.count % 4 == 0 else {
            throw DecodingError.dataCorruptedError(forKey: .buckets, in: container,
                                                   debugDescription: "Histogram buckets must be base64 of ascending (value delta, count) varint pairs.")
        }
        self.arrays = nil
        self.encoded = text
        self.packed = nil
        self.min = try container.decode(UInt64.self, forKey: .min)
        self.max = try container.decode(UInt64.self, forKey: .max)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(self.bucketText, forKey: .buckets)
        try container.encode(self.max, forKey: .max)
        try container.encode(self.min, forKey: .min)
    }

    /// The value at a percentile (0-100), read straight from the sparse buckets, as the dense histogram would
    /// answer it: the bucket's highest equivalent value, capped at the exact maximum.
    public func valueAtPercentile(_ percentile: Double) -> UInt64 {
        let buckets = self.buckets
        let total = buckets.counts.reduce(0, &+)
        guard total > 0 else { return 0 }
        if percentile >= 100 { return self.max }
        if percentile <= 0 { return self.min }
        let wanted = Swift.max(1, UInt64((percentile.nextDown * Double(total) / 100).rounded(.up)))
        var seen: UInt64 = 0
        for i in buckets.values.indices {
            seen &+= buckets.counts[i]
            if seen >= wanted { return Swift.max(Swift.min(buckets.values[i], self.max), self.min) }
        }
        return self.max
    }

    /// The dense histogram, rebuilt exactly in one pass over the buckets (or their encoding). The exact extremes go
    /// into the first and last buckets (they belong there), so min and max survive. Malformed buckets are refused.
    public func histogram() throws(LoadgenError) -> LatencyHistogram {
        var sink = HistogramSink(min: self.min, max: self.max)
        let decoded = self.forEachBucket(into: &sink)
        sink.finish()
        if let refusal = sink.reader.refusal(decoded: decoded, expectedTotal: 0) { throw refusal }
        return sink.histogram
    }
}

extension SparseHistogram {
    /// Checks the buckets as a coordinator would (whole pairs, ascending, within 64 bits, and adding up to
    /// `expectedTotal` when that is nonzero) without building anything.
    public func validate(expectedTotal: UInt64 = 0) throws(LoadgenError) {
        var sink = ReaderSink(reader: PercentileReader(min: self.min, max: self.max, total: expectedTotal, percentiles: []))
        let decoded = self.forEachBucket(into: &sink)
        if let refusal = sink.reader.refusal(decoded: decoded, expectedTotal: expectedTotal) { throw refusal }
    }

    /// The exact sum of sparse histograms of the one layout, without a dense round trip: the same bucket has the same
    /// value in every one, so buckets of equal value add. One histogram comes back as it is. Each must be valid
    /// (``validate(expectedTotal:)``).
    public static func merged(_ parts: [SparseHistogram]) -> SparseHistogram {
        let parts = parts.filter { !$0.isEmpty }
        guard parts.count > 1 else { return parts.first ?? SparseHistogram() }
        var values = parts[0].values
        var counts = parts[0].counts
        for part in parts.dropFirst() {
            let (otherValues, otherCounts) = (part.values, part.counts)
            var mergedValues: [UInt64] = []
            var mergedCounts: [UInt64] = []
            mergedValues.reserveCapacity(values.count + otherValues.count)
            mergedCounts.reserveCapacity(values.count + otherValues.count)
            var i = 0
            var j = 0
            while i < values.count || j < otherValues.count {
                if j == otherValues.count || (i < values.count && values[i] < otherValues[j]) {
                    mergedValues.append(values[i])
                    mergedCounts.append(counts[i])
                    i += 1
                } else if i == values.count || otherValues[j] < values[i] {
                    mergedValues.append(otherValues[j])
                    mergedCounts.append(otherCounts[j])
                    j += 1
                } else {
                    mergedValues.append(values[i])
                    mergedCounts.append(counts[i] &+ otherCounts[j])
                    i += 1
                    j += 1
                }
            }
            values = mergedValues
            counts = mergedCounts
        }
        return SparseHistogram(values: values, counts: counts, min: parts.map(\.min).min()!, max: parts.map(\.max).max()!)
    }
}

private struct ReaderSink: BucketSink {
    var reader: PercentileReader

    @inline(__always)
    mutating func take(_ value: UInt64, _ count: UInt64) { self.reader.take(value, count) }
}

/// Builds a dense histogram from ascending buckets: holds back the latest bucket (the last one gets the exact
/// maximum), and checks the order on the way.
private struct HistogramSink: BucketSink {
    let min: UInt64
    let max: UInt64
    var histogram = LatencyHistogram.latency()
    var reader: PercentileReader
    var pending: (value: UInt64, count: UInt64)?
    var first = true

    init(min: UInt64, max: UInt64) {
        self.min = min
        self.max = max
        self.reader = PercentileReader(min: min, max: max, total: 0, percentiles: [])
    }

    @inline(__always)
    mutating func take(_ value: UInt64, _ count: UInt64) {
        if let pending = self.pending { self.record(pending, last: false) }
        self.pending = (value, count)
        self.reader.take(value, count)
    }

    mutating func finish() {
        if let pending = self.pending { self.record(pending, last: true) }
        self.pending = nil
    }

    /// Records a bucket. Any value of a bucket stands for all of them, so the first bucket's values go in at the exact
    /// minimum (one of them) and the last bucket's at the exact maximum: the rebuilt histogram's min and max are then
    /// exact, and every count is in the bucket it came from.
    @inline(__always)
    private mutating func record(_ bucket: (value: UInt64, count: UInt64), last: Bool) {
        let top = LatencyHistogram.highestLatencyNanos
        var count = bucket.count
        guard count > 0 else {
            self.first = false
            return
        }
        let value = Swift.min(bucket.value, top)
        if self.first, self.min > 0, self.histogram.valuesAreEquivalent(Swift.min(self.min, top), value) {
            self.histogram.record(Swift.min(self.min, top))
            count -= 1
        }
        self.first = false
        if last, count > 0, self.max > 0, self.histogram.valuesAreEquivalent(Swift.min(self.max, top), value) {
            self.histogram.record(Swift.min(self.max, top), count: count)
            count = 0
        }
        if count > 0 { self.histogram.record(value, count: count) }
    }
}

/// Turns decoded bytes into (value, count) pairs: LEB128 varints, values as deltas from the previous one. A struct
/// with a mutating method, so its state needs no dynamic exclusivity checks (a nested function capturing local
/// variables paid one per byte); the state lives in locals while a chunk is parsed.
struct BucketParser {
    private var number: UInt64 = 0
    private var shift: UInt64 = 0
    private var previous: UInt64 = 0
    private var delta: UInt64 = 0
    private var haveDelta = false
    private var any = false
    private(set) var bad = false

    var isComplete: Bool { !self.bad && !self.haveDelta && self.shift == 0 && self.number == 0 }

    @inline(__always)
    mutating func feed<Sink: BucketSink>(_ bytes: UnsafeBufferPointer<UInt8>, into sink: inout Sink) {
        var number = self.number, shift = self.shift, previous = self.previous, delta = self.delta
        var haveDelta = self.haveDelta, any = self.any
        defer {
            self.number = number
            self.shift = shift
            self.previous = previous
            self.delta = delta
            self.haveDelta = haveDelta
            self.any = any
        }
        for byte in bytes {
            // A varint of more than 64 bits.
            if shift >= 63, shift > 63 || byte > 1 {
                self.bad = true
                return
            }
            number |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 != 0 {
                shift &+= 7
                continue
            }
            if haveDelta {
                let (value, overflow) = previous.addingReportingOverflow(delta)
                if overflow || (any && delta == 0) {
                    self.bad = true
                    return
                }
                sink.take(value, number)
                any = true
                previous = value
                haveDelta = false
            } else {
                delta = number
                haveDelta = true
            }
            number = 0
            shift = 0
        }
    }
}

/// Where decoded buckets go, one (value, count) at a time.
protocol BucketSink {
    mutating func take(_ value: UInt64, _ count: UInt64)
}

struct ClosureSink: BucketSink {
    let body: (UInt64, UInt64) -> Void

    func take(_ value: UInt64, _ count: UInt64) { self.body(value, count) }
}
