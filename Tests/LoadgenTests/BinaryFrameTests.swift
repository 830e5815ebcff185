import Foundation
import Testing
@testable import LoadgenCore
@testable import LoadgenWorkloads

/// Protocol 4's binary frames (schemas/wire/frames.proto): every message round trips, broken bodies are refused
/// with a sentence, and histograms merge exactly after the trip.
struct BinaryFrameTests {
    static func roundTrip(_ message: WireMessage) throws -> WireMessage {
        var decoder = FrameDecoder()
        decoder.append(try FrameCodec.encode(message))
        let back = try #require(try decoder.nextMessage())
        #expect(decoder.bufferedBytes == 0)
        return back
    }

    static var intervals: [WireMessage.Interval] {
        var write = Tally()
        write.ops = 3
        write.bytes = 96
        write.recordError(.noSpace, "creating d0/x: No space left on device")
        write.recordError(.noSpace, "again")
        write.recordError(.accessDenied, "d1: Permission denied")
        for v: UInt64 in [900, 1_000_000, 3_700_000_000_000] { write.recordLatency(v) }
        var fetch = Tally(targetCount: 2)
        fetch.ops = 4
        fetch.bytes = 4096
        fetch.statusClasses = [0, 3, 1, 0, 0]
        fetch.redirects = 1
        fetch.targets[0].ops = 3
        fetch.targets[0].statusClasses = [0, 3, 0, 0, 0]
        fetch.targets[1].ops = 1
        fetch.targets[1].errors = 2
        fetch.targets[1].latencyNanosMax = 77
        fetch.targets[1].statusClasses = [0, 0, 1, 0, 0]
        for v: UInt64 in [1, 2, 70_000, 70_001] { fetch.recordLatency(v) }
        return [
            .init(runID: "261204-020000-aaaa", phase: .main, seq: 1, elapsedNanos: 1_000_000_123, tally: write),
            .init(runID: "r", phase: .cleanup, seq: 9, elapsedNanos: 0, tally: Tally()),
            .init(runID: "fetch-run", phase: .main, seq: Int(Int32.max), elapsedNanos: .max, tally: fetch),
        ]
    }

    @Test func everyMessageRoundTripsThroughItsEncoding() throws {
        let all = WireSchemaTests.samples + Self.intervals.map(WireMessage.interval) + [.heartbeat(.init(seq: 0)),
                                                                                      .heartbeat(.init(seq: .max))]
        #expect(Set(all.map(\.kind)) == Set(WireMessage.Kind.allCases))
        for message in all {
            #expect(try Self.roundTrip(message) == message, "\(message.kind)")
        }
        // What the coordinator reads of an interval survives exactly: counters, errors, samples, the histogram.
        for interval in Self.intervals {
            guard case .interval(let back) = try Self.roundTrip(.interval(interval)) else { Issue.record("not an interval"); continue }
            let (a, b) = (try interval.tally(), try back.tally())
            #expect(a.ops == b.ops && a.bytes == b.bytes && a.errors == b.errors && a.errorSamples == b.errorSamples)
            #expect(a.latency == b.latency)
            #expect(a.latency.min == b.latency.min && a.latency.maxRecorded == b.latency.maxRecorded)
            #expect(a.statusClasses == b.statusClasses && a.redirects == b.redirects && a.targets == b.targets)
        }
    }

    @Test func intervalsAreMuchSmallerThanTheirJSON() throws {
        var tally = Tally()
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 { tally.recordLatency(UInt64.random(in: 50_000...5_000_000, using: &generator)) }
        tally.ops = 20_000
        let interval = WireMessage.Interval(runID: "r", phase: .main, seq: 1, elapsedNanos: 1, tally: tally)
        let binary = try FrameCodec.encode(.interval(interval)).count
        let json = try FrameCodec.makeEncoder().encode(WireMessage.interval(interval)).count
        #expect(binary * 4 < json * 3, "binary \(binary) bytes, JSON \(json)")
    }

    /// Every cut of a binary body is refused (never read as a shorter message), and says so.
    @Test func truncatedBodiesAreRefused() throws {
        for message in Self.intervals.map(WireMessage.interval) + [.heartbeat(.init(seq: 300))] {
            let body = Array(try FrameCodec.encode(message).dropFirst(4))
            for cut in 0..<body.count {
                do {
                    let decoded = try FrameCodec.decodeBody(body[..<cut])
                    Issue.record("\(cut) of \(body.count) bytes decoded as \(decoded.kind)")
                } catch {
                    #expect(error.code == .protocolViolation)
                    #expect(cut == 0 ? error.message.contains("empty") : error.message.contains("truncated") || error.message.contains("well-formed"), "\(error.message)")
                }
            }
        }
    }

    /// A length inside a body that claims more than the body holds is refused when read, before anything of that size
    /// is reserved; the frame's own length is refused on its four bytes (FrameCodecTests, WireSchemaTests).
    @Test(arguments: [
        [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x0A, 0x01, 0x72],            // an interval of 4 GiB
        [0x0A, 0x06, 0x4A, 0x80, 0x80, 0x80, 0x80, 0x40],                  // a histogram of 2^46 bytes
        [0x0A, 0x07, 0x4A, 0x05, 0x0A, 0xFF, 0xFF, 0xFF, 0x7F],            // packed buckets of 256 MiB
        [0x0A, 0x03, 0x3A, 0xFF, 0x7F],                                    // an error count map entry of 16 KiB
    ] as [[UInt8]])
    func innerLengthsBeyondTheBodyAreRefused(body: [UInt8]) {
        do {
            _ = try FrameCodec.decodeBody(body)
            Issue.record("decoded")
        } catch {
            #expect(error.message.contains("binary frame could not be decoded"), "\(error.message)")
        }
    }

    @Test(arguments: [
        ([0x1A, 0x00], "holds no message"),                                  // field 3: no such message
        ([0x0A, 0x02, 0x10, 0x07], "phase 7"),                              // an unknown phase
        ([0x0A, 0x09, 0x3A, 0x07, 0x0A, 0x03, 0x42, 0x41, 0x44, 0x10, 0x01], "unknown kind 'BAD'"),
        ([0x0A, 0x04, 0x5A, 0x02, 0x01, 0x02], "status_classes must hold 5"),
        ([0x08, 0x01], "holds no message"),                                 // a varint where the oneof is (skipped)
        ([0x0A, 0x03, 0x0A, 0x01, 0xFF], "UTF-8"),                          // a run id that is not text
    ] as [([UInt8], String)])
    func malformedBinaryBodiesAreRefusedNamingWhy(body: [UInt8], why: String) {
        do {
            let decoded = try FrameCodec.decodeBody(body)
            Issue.record("decoded as \(decoded.kind)")
        } catch {
            #expect(error.message.contains(why), "\(error.message)")
        }
    }

    @Test(arguments: ["interval", "heartbeat"])
    func theBinaryKindsAreRefusedAsJSON(kind: String) throws {
        // Whole messages as protocol 3 wrote them, so the refusal is for the encoding, not a missing field.
        let message = try #require(WireSchemaTests.samples.first { $0.kind.rawValue == kind })
        let json = try FrameCodec.makeEncoder().encode(message)
        do {
            _ = try FrameCodec.decodeBody(Array(json))
            Issue.record("accepted")
        } catch {
            #expect(error.message.contains("binary frame") || error.message.contains("lacks"), "\(error.message)")
        }
    }

    /// Buckets that break the rules survive decoding as they came, and are refused where they are read.
    @Test(arguments: [
        ([100, 5, 0, 5] as [UInt64], "whole, ascending"),            // a repeated value
        ([100, 5, 7] as [UInt64], "whole, ascending"),               // half a pair
        ([UInt64.max, 1, 1, 1] as [UInt64], "whole, ascending"),     // values past 64 bits
        ([1 << 40, 1 << 40] as [UInt64], "too large"),               // counts × values past 64 bits
    ])
    func badBucketsAreRefusedWhenRead(pairs: [UInt64], why: String) throws {
        var interval = Self.intervals[0]
        interval.latency = SparseHistogram(pairs: pairs, min: 1, max: 1 << 40)
        guard case .interval(let back) = try Self.roundTrip(.interval(interval)) else { return }
        var aggregate = RunAggregate(request: RunRequest(runID: "r", write: WriteSpec(target: "/tmp", files: 1), mode: .threads, workers: 1, seed: 1),
                                     agents: [.init(agentID: "a", host: "h", address: "x", rttNanos: 0, clockOffsetNanos: 0)])
        do throws(LoadgenError) {
            _ = try aggregate.apply(agent: 0, interval: back)
            Issue.record("applied")
        } catch {
            #expect(error.message.contains(why), "\(error.message)")
        }
        #expect(aggregate.clusterTally(.main).latency.totalCount == 0)
        #expect(throws: LoadgenError.self) { try back.latency.validate() }
    }

    /// Several agents' intervals, each through the binary frames, merged by the coordinator's aggregate: the same
    /// percentiles, minimum and maximum as one histogram of all the raw values.
    @Test(arguments: [1, 2, 3])
    func histogramsMergeExactlyAfterTheTrip(seed: UInt64) throws {
        var generator = SplitMixGenerator(seed: seed)
        let agents = 4
        var raw = LatencyHistogram.latency()
        var aggregate = RunAggregate(request: RunRequest(runID: "r", write: WriteSpec(target: "/tmp", files: 1), mode: .threads, workers: 1, seed: 1),
                                     agents: (0..<agents).map { .init(agentID: "a\($0)", host: "h", address: "x\($0)", rttNanos: 0, clockOffsetNanos: 0) })
        var sum: UInt64 = 0
        for seq in 1...5 {
            for agent in 0..<agents {
                var tally = Tally()
                for _ in 0..<Int.random(in: 0...2_000, using: &generator) {
                    // Spread over nine orders of magnitude, so agents' windows differ and grow.
                    let value = UInt64(pow(10, Double.random(in: 1...12, using: &generator)))
                    tally.recordLatency(value)
                    raw.recordLatency(value)
                    sum &+= value
                    tally.ops += 1
                }
                let sent = WireMessage.Interval(runID: "r", phase: .main, seq: seq, elapsedNanos: UInt64(seq) * 1_000_000_000, tally: tally)
                guard case .interval(let received) = try Self.roundTrip(.interval(sent)) else { return }
                _ = try aggregate.apply(agent: agent, interval: received)
            }
        }
        let merged = aggregate.clusterTally(.main)
        #expect(merged.latency == raw)
        #expect(merged.latencySumNanos == sum)
        for p in [0.0, 1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 100] {
            #expect(merged.latency.valueAtPercentile(p) == raw.valueAtPercentile(p), "p\(p)")
        }
        #expect(merged.latency.min == raw.min)
        #expect(merged.latency.maxRecorded == raw.maxRecorded)
    }

    /// Worker processes' histograms go on sparse, summed without a dense round trip, to the same counts.
    @Test func sparseHistogramsSumExactly() throws {
        var generator = SplitMixGenerator(seed: 9)
        var parts: [LatencyHistogram] = []
        var all = LatencyHistogram.latency()
        for _ in 0..<5 {
            var h = LatencyHistogram.latency()
            for _ in 0..<500 {
                let value = UInt64.random(in: 1...10_000_000, using: &generator)
                h.recordLatency(value)
                all.recordLatency(value)
            }
            parts.append(h)
        }
        let sparse = parts.map { SparseHistogram(pairs: SparseHistogram($0).deltaPairs, min: $0.min, max: $0.maxRecorded) }
        let merged = SparseHistogram.merged(sparse)
        #expect(try merged.histogram() == all)
        #expect(merged.min == all.min && merged.max == all.maxRecorded)
        // One alone is forwarded as it came.
        #expect(SparseHistogram.merged([sparse[0], SparseHistogram()]).deltaPairs == sparse[0].deltaPairs)
        // The mailbox keeps them sparse, and its interval is their exact sum.
        let mailbox = TallyMailbox()
        var counters = Tally()
        counters.ops = 500
        for part in sparse { mailbox.handOver(counters: counters, latency: part) }
        let handed = mailbox.take()
        #expect(handed.sparse.count == 5)
        #expect(handed.tally.latency.totalCount == 0)
        let interval = WireMessage.Interval(runID: "r", phase: .main, seq: 1, elapsedNanos: 1, handed: handed)
        #expect(interval.ops == 2_500)
        #expect(try interval.latency.histogram() == all)
    }
}

struct SplitMixGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed &* 0x9E37_79B9_7F4A_7C15 }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        return FileNamer.mix(self.state)
    }
}

struct LatencyCountsWidthTests {
    /// Counters start 32-bit and move to 64-bit when one would pass 2^32 - 1, exactly, wherever it happens.
    @Test func countersWidenExactlyPastThirtyTwoBits() throws {
        var counts = LatencyCounts()
        let small = SparseHistogram(values: [1_023, 5_119, 70_015], counts: [7, 1, 2], min: 1_000, max: 70_000)
        try counts.add(small)
        let narrowBytes = counts.heldBytes
        #expect(narrowBytes == 4 * counts.heldCounters)
        let big = SparseHistogram(values: [1_023, 5_119, 70_015], counts: [1, 3_000_000_000, 1], min: 1_000, max: 70_000)
        try counts.add(big)
        try counts.add(big)
        #expect(counts.heldBytes == 8 * counts.heldCounters)
        let sparse = counts.sparse
        #expect(sparse.values == [1_023, 5_119, 70_015])
        #expect(sparse.counts == [9, 6_000_000_001, 4])
        #expect(counts.total == 6_000_000_014)
        // Past 64 bits is refused and leaves no trace.
        var full = LatencyCounts()
        let quarter = SparseHistogram(values: [1], counts: [1 << 62], min: 1, max: 1)
        for _ in 0..<3 { try full.add(quarter) }
        do throws(LoadgenError) {
            try full.add(quarter)
            Issue.record("a count past 64 bits was added")
        } catch {
            #expect(error.message.contains("pass what 64 bits hold"), "\(error.message)")
        }
        #expect(full.sparse.counts == [3 << 62])
    }

    /// A window covers only what the values span: a log-normal second of 20,000 latencies takes tens of KB.
    @Test func aTypicalIntervalTakesAWindowNotTheLayout() throws {
        var tally = Tally()
        var generator = SplitMixGenerator(seed: 4)
        for _ in 0..<20_000 {
            tally.recordLatency(UInt64(200_000 * exp(0.6 * (Double.random(in: -3...3, using: &generator)))))
        }
        var counts = LatencyCounts()
        try counts.add(SparseHistogram(tally.latency))
        #expect(counts.heldBytes <= 40 * 1024, "\(counts.heldBytes) bytes")
        #expect(counts.histogram() == tally.latency)
    }
}
