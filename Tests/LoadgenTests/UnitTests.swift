import Foundation
import Testing
@testable import LoadgenCore
@testable import LoadgenWorkloads

struct SizeParsingTests {
    @Test(arguments: [("2", 2), ("0", 0), ("4k", 4096), ("4K", 4096), ("1.5k", 1536), ("1m", 1 << 20),
                      ("1g", 1 << 30), ("64KiB", 65536), ("10b", 10), (" 3k ", 3072)])
    func parsesByteCounts(text: String, bytes: Int) {
        #expect(ByteCount.parse(text) == UInt64(bytes))
    }

    @Test(arguments: ["", "k", "-1", "1x", "1kk", "abc", "1e3", "nan", "2000t"])
    func refusesNonByteCounts(text: String) {
        #expect(ByteCount.parse(text) == nil)
    }

    @Test func parsesRangesWithBothBounds() throws {
        let range = try SizeRange.parse("1k-64k")
        #expect(range.lowerBytes == 1024)
        #expect(range.upperBytes == 65536)
        #expect(!range.isFixed)
    }

    @Test func refusesABackwardRangeNamingIt() {
        #expect(throws: LoadgenError.self) { try SizeRange.parse("64k-1k") }
        do {
            _ = try SizeRange.parse("64k-1k")
        } catch {
            #expect(error.message.contains("64k-1k"))
            #expect(error.code == .usage)
        }
    }

    @Test func refusesGarbageNamingTheValue() {
        do {
            _ = try SizeRange.parse("12x")
            Issue.record("12x was accepted")
        } catch {
            #expect(error.message.contains("'12x'"))
        }
    }

    @Test(arguments: [("30s", 30_000_000_000), ("500ms", 500_000_000), ("2m", 120_000_000_000), ("1h", 3_600_000_000_000),
                      ("1.5s", 1_500_000_000), ("3", 3_000_000_000), ("250us", 250_000)])
    func parsesDurations(text: String, nanos: UInt64) {
        #expect(DurationText.parseNanos(text) == nanos)
    }

    @Test(arguments: ["", "s", "-1s", "1d", "fast"])
    func refusesNonDurations(text: String) {
        #expect(DurationText.parseNanos(text) == nil)
    }
}

struct WorkDivisionTests {
    @Test(arguments: [(10, 3), (100_000, 2), (7, 7), (3, 8), (1, 1), (1_000_003, 64)])
    func sharesCoverEveryIndexOnceAndDifferByAtMostOne(total: Int, workers: Int) {
        var next: UInt64 = 0
        var counts: [UInt64] = []
        for w in 0..<workers {
            let share = FileNamer.share(of: UInt64(total), workers: workers, worker: w)
            #expect(share.first == next)
            next += share.count
            counts.append(share.count)
        }
        #expect(next == UInt64(total))
        #expect((counts.max() ?? 0) - (counts.min() ?? 0) <= 1)
    }
}

struct FileNamerTests {
    @Test func namesAreUrlSafe86CharactersPlusTxt() {
        let namer = FileNamer(seed: 42, size: SizeRange(exactly: 2), dirs: 1)
        let name = namer.path(of: 7)
        #expect(name.count == 90)
        #expect(name.hasSuffix(".txt"))
        let allowed = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        #expect(name.dropLast(4).allSatisfy { allowed.contains($0) })
    }

    @Test func namesArePureFunctionsOfSeedAndIndex() {
        let a = FileNamer(seed: 1, size: SizeRange(exactly: 2), dirs: 1)
        let b = FileNamer(seed: 1, size: SizeRange(exactly: 2), dirs: 1)
        let c = FileNamer(seed: 2, size: SizeRange(exactly: 2), dirs: 1)
        #expect(a.path(of: 99) == b.path(of: 99))
        #expect(a.path(of: 99) != c.path(of: 99))
        #expect(a.path(of: 99) != a.path(of: 100))
    }

    @Test func namesDoNotCollideAcrossManyIndices() {
        let namer = FileNamer(seed: 7, size: SizeRange(exactly: 2), dirs: 1)
        let names = Set((0..<20_000).map { namer.path(of: UInt64($0)) })
        #expect(names.count == 20_000)
    }

    @Test func subdirectoriesPrefixThePathRoundRobin() {
        let namer = FileNamer(seed: 3, size: SizeRange(exactly: 2), dirs: 12)
        #expect(namer.path(of: 0).hasPrefix("d000000/"))
        #expect(namer.path(of: 13).hasPrefix("d000001/"))
        #expect(namer.path(of: 11).hasPrefix("d000011/"))
        #expect(FileNamer.directoryName(11) == "d000011")
    }

    @Test func rangeSizesStayWithinBoundsAndReachBoth() {
        let namer = FileNamer(seed: 9, size: SizeRange(lowerBytes: 10, upperBytes: 13), dirs: 1)
        let sizes = (0..<2000).map { namer.sizeBytes(of: UInt64($0)) }
        #expect(sizes.allSatisfy { $0 >= 10 && $0 <= 13 })
        #expect(Set(sizes) == [10, 11, 12, 13])
    }

    @Test func agentsGetDifferentSeeds() {
        #expect(FileNamer.agentSeed(runSeed: 5, agentID: "a") != FileNamer.agentSeed(runSeed: 5, agentID: "b"))
    }
}

struct HistogramTests {
    @Test func mergedHistogramEqualsOneRecordingEverything() {
        var a = LatencyHistogram.latency()
        var b = LatencyHistogram.latency()
        var all = LatencyHistogram.latency()
        for v in stride(from: UInt64(1000), to: 2_000_000, by: 997) {
            if v % 3 == 0 { a.recordLatency(v) } else { b.recordLatency(v) }
            all.recordLatency(v)
        }
        var merged = a
        merged.add(b)
        #expect(merged.totalCount == all.totalCount)
        for p in [50.0, 90, 99, 99.9, 100] {
            #expect(merged.valueAtPercentile(p) == all.valueAtPercentile(p))
        }
    }

    @Test func sparseFormRoundTripsExactly() throws {
        var h = LatencyHistogram.latency()
        for v: UInt64 in [1, 7, 999, 1000, 1001, 123_456, 9_999_999, 60_000_000_000] { h.recordLatency(v) }
        h.record(5000, count: 17)
        let sparse = SparseHistogram(h)
        #expect(sparse.bucketCount < 20)
        let back = try sparse.histogram()
        #expect(back.totalCount == h.totalCount)
        for p in [10.0, 50, 90, 99, 100] { #expect(back.valueAtPercentile(p) == h.valueAtPercentile(p)) }
        #expect(back.min == h.min)
        #expect(back.maxRecorded == h.maxRecorded)
        #expect(SparseHistogram(back) == sparse)
        for p in [0.0, 10, 50, 90, 99, 99.9, 100] { #expect(sparse.valueAtPercentile(p) == h.valueAtPercentile(p), "p\(p)") }
        #expect(String(decoding: try FrameCodec.makeEncoder().encode(sparse), as: UTF8.self) == sparse.jsonText)
        let json = try JSONEncoder().encode(sparse)
        #expect(try JSONDecoder().decode(SparseHistogram.self, from: json) == sparse)
    }

    @Test func latenciesBeyondTheLayoutAreClampedNotDropped() {
        var h = LatencyHistogram.latency()
        h.recordLatency(UInt64.max)
        #expect(h.totalCount == 1)
    }

    // "gA==" is a varint cut short; "AQEAAQ==" repeats a value (delta 0); "/////////////////w==" overflows.
    @Test(arguments: ["gA==", "AQ=", "A", "AQEAAQ==", "!!!!", "/////////////////wE=", "AQ==AQ=="])
    func malformedBucketTextIsRefused(text: String) {
        #expect(SparseHistogram.parseBuckets(text) == nil)
    }

    @Test func bucketTextRoundTrips() throws {
        let sparse = SparseHistogram(values: [1, 127, 128, 18015, 19503, 3_600_000_000_000], counts: [1, 300, 1, 2, 1, 9],
                                     min: 1, max: 3_600_000_000_000)
        let parsed = try #require(SparseHistogram.parseBuckets(sparse.bucketText))
        #expect(parsed.values == sparse.values)
        #expect(parsed.counts == sparse.counts)
        #expect(SparseHistogram.parseBuckets("")?.values == [])
    }

    // Decoding goes through a stack buffer of 1,023 base64 quads at a time: sizes around and well past it, each
    // with every padding shape, must round-trip and merge exactly.
    @Test(arguments: [1, 500, 700, 1500, 5000])
    func largeBucketTextsRoundTripAcrossDecodingChunks(buckets: Int) throws {
        var values: [UInt64] = []
        var counts: [UInt64] = []
        var value: UInt64 = 1000
        for i in 0..<buckets {
            value += UInt64(1 + (i * 7919) % 300) * (i % 50 == 0 ? 1_000_003 : 1)
            values.append(value)
            counts.append(UInt64(1 + (i * 104_729) % 70_000))
        }
        let sparse = SparseHistogram(values: values, counts: counts, min: 1000, max: value)
        for trim in 0..<min(3, buckets) {
            // Drop buckets so the encoding ends with each padding shape.
            let n = values.count - trim
            let cut = SparseHistogram(values: Array(values[..<n]), counts: Array(counts[..<n]), min: 1000, max: values[n - 1])
            let parsed = try #require(SparseHistogram.parseBuckets(cut.bucketText))
            #expect(parsed.values == cut.values)
            #expect(parsed.counts == cut.counts)
        }
        let decoded = try JSONDecoder().decode(SparseHistogram.self, from: Data(sparse.jsonText.utf8))
        var fromText = LatencyCounts()
        var fromArrays = LatencyCounts()
        let p1 = try fromText.add(decoded, percentiles: [0, 50, 99, 100], expectedTotal: counts.reduce(0, +))
        let p2 = try fromArrays.add(sparse, percentiles: [0, 50, 99, 100], expectedTotal: counts.reduce(0, +))
        #expect(p1 == p2)
        #expect(fromText.sparse == fromArrays.sparse)
    }

    // Bucket texts come off the network: random ones, mostly well-formed base64 of random bytes, must never trap,
    // and whatever parses must be ascending and merge to the same counts either way.
    @Test func randomBucketTextsNeverTrap() throws {
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        func next() -> UInt64 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=!".utf8)
        var parsedSome = 0
        for round in 0..<3000 {
            let text: String
            if round % 2 == 0 {
                let bytes = (0..<Int(next() % 40)).map { _ in UInt8(truncatingIfNeeded: next() % (round % 4 == 0 ? 256 : 128)) }
                text = Base64.encode(bytes)
            } else {
                text = String(decoding: (0..<Int(next() % 40)).map { _ in alphabet[Int(next() % UInt64(alphabet.count))] }, as: UTF8.self)
            }
            guard let parsed = SparseHistogram.parseBuckets(text) else { continue }
            parsedSome += 1
            #expect(zip(parsed.values, parsed.values.dropFirst()).allSatisfy { $0 < $1 }, "\(text)")
            // A dense merge costs a 33,792-counter sweep: check it on a sample.
            guard parsedSome % 20 == 1 else { continue }
            let json = #"{"buckets":"\#(text)","max":0,"min":0}"#
            let decoded = try JSONDecoder().decode(SparseHistogram.self, from: Data(json.utf8))
            var counts = LatencyCounts()
            _ = try? counts.add(decoded)
            var fromArrays = LatencyCounts()
            _ = try? fromArrays.add(SparseHistogram(values: parsed.values, counts: parsed.counts))
            #expect(counts.sparse.counts == fromArrays.sparse.counts, "\(text)")
        }
        #expect(parsedSome > 100)
    }

    @Test(arguments: [0, 1, 2, 3, 4, 5, 100])
    func base64MatchesFoundation(length: Int) {
        let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        #expect(Base64.encode(bytes) == Data(bytes).base64EncodedString())
        #expect(Base64.decode(Base64.encode(bytes)) == bytes)
    }

    @Test func outOfOrderSparseBucketsAreRefused() {
        #expect(throws: LoadgenError.self) { try SparseHistogram(values: [5000, 1000], counts: [1, 1], min: 1000, max: 5000).histogram() }
    }
}

struct TallyTests {
    @Test func mergingSumsEverything() {
        var a = Tally()
        a.ops = 3
        a.bytes = 30
        a.recordError(.noSpace, "full")
        a.latency.recordLatency(100)
        var b = Tally()
        b.ops = 4
        b.bytes = 40
        b.recordError(.noSpace, "full again")
        b.recordError(.accessDenied, "denied")
        b.latency.recordLatency(200)
        a.merge(b)
        #expect(a.ops == 7)
        #expect(a.bytes == 70)
        #expect(a.errors[.noSpace] == 2)
        #expect(a.errors[.accessDenied] == 1)
        #expect(a.errors.total == 3)
        #expect(a.errorSamples[.noSpace] == "full")
        #expect(a.latency.totalCount == 2)
    }

    @Test func errorCountsEncodeAsNamedNonzeroCounts() throws {
        var counts = ErrorCounts()
        counts.add(.noSpace, 3)
        counts.add(.workerLost)
        let data = try FrameCodec.makeEncoder().encode(counts)
        #expect(String(decoding: data, as: UTF8.self) == #"{"ENOSPC":3,"worker":1}"#)
        #expect(try FrameCodec.makeDecoder().decode(ErrorCounts.self, from: data) == counts)
    }

    @Test func unknownErrorKindsAreRefused() {
        #expect(throws: (any Error).self) { try FrameCodec.makeDecoder().decode(ErrorCounts.self, from: Data(#"{"EWHAT":1}"#.utf8)) }
    }

    @Test func errnoValuesMapToTheirNames() {
        #expect(ErrorKind.fromErrno(ENOSPC) == .noSpace)
        #expect(ErrorKind.fromErrno(EMFILE) == .tooManyOpenFiles)
        #expect(ErrorKind.fromErrno(EACCES) == .accessDenied)
        #expect(ErrorKind.fromErrno(9999) == .otherErrno)
        #expect(ErrorKind.noSpace.endsWriteRun)
        #expect(!ErrorKind.accessDenied.endsWriteRun)
    }
}

struct ModeListTests {
    @Test func allMeansEveryModeInOrder() throws {
        #expect(try ExecutionMode.parseList("all", workload: .write) == [.sequential, .threads, .processes, .async])
        #expect(try ExecutionMode.parseList("threads, sequential,threads", workload: .write) == [.threads, .sequential])
    }

    @Test(arguments: ["fast", "threads,", "", "thread"])
    func unknownModesAreRefusedByName(text: String) {
        #expect(throws: LoadgenError.self) { try ExecutionMode.parseList(text, workload: .write) }
    }
}

struct RequestValidationTests {
    func request(files: Int = 10, workers: Int = 2, dirs: Int = 1, runID: String = "r1") -> RunRequest {
        RunRequest(runID: runID, write: WriteSpec(target: "/tmp", files: files, dirs: dirs), mode: .threads,
                   workers: workers, seed: 1)
    }

    @Test func aValidRequestPasses() throws {
        try self.request().validate()
    }

    @Test(arguments: [(0, 2, 1, "r1", "--files"), (-5, 2, 1, "r1", "--files"), (10, 0, 1, "r1", "--workers"),
                      (10, -1, 1, "r1", "--workers"), (10, 5000, 1, "r1", "--workers"), (10, 2, 0, "r1", "--dirs"),
                      (10, 2, 1, "../x", "run id"), (10, 2, 1, "", "run id")])
    func invalidFieldsAreNamed(files: Int, workers: Int, dirs: Int, runID: String, named: String) {
        do {
            try self.request(files: files, workers: workers, dirs: dirs, runID: runID).validate()
            Issue.record("accepted an invalid request")
        } catch {
            #expect(error.message.contains(named), "\(error.message)")
        }
    }
}

struct SnakeCaseTests {
    @Test func keysConvertBothWaysWithAcronyms() throws {
        let report = WireMessage.Prepared(runID: "x", runDirectory: "/tmp/d")
        let data = try FrameCodec.makeEncoder().encode(report)
        #expect(String(decoding: data, as: UTF8.self) == #"{"run_directory":"\/tmp\/d","run_id":"x"}"# ||
                String(decoding: data, as: UTF8.self) == #"{"run_directory":"/tmp/d","run_id":"x"}"#)
        #expect(try FrameCodec.makeDecoder().decode(WireMessage.Prepared.self, from: data) == report)
        #expect(SnakeCaseKey(camel: "perURL").stringValue == "per_url")
        #expect(SnakeCaseKey(camel: "insecureTLS").stringValue == "insecure_tls")
        #expect(SnakeCaseKey(camel: "firstDoneS").stringValue == "first_done_s")
        #expect(SnakeCaseKey(camel: "ENOSPC").stringValue == "ENOSPC")
        #expect(SnakeCaseKey("per_url").stringValue == "perURL")
        #expect(SnakeCaseKey("mib_per_s").stringValue == "mibPerS")
    }
}

struct LatencyCountsTests {
    @Test func indexArithmeticMatchesTheLibrary() throws {
        // Every bucket boundary region and a spread of random values, 0 to the layout's top.
        var values: [UInt64] = [0, 1, 2, 1023, 1024, 2047, 2048, 2049, 4095, 4096, 1_000_000, LatencyHistogram.highestLatencyNanos]
        var state: UInt64 = 12345
        for _ in 0..<20_000 {
            state = FileNamer.mix(state)
            values.append(state % LatencyHistogram.highestLatencyNanos >> (state % 40))
        }
        var direct = LatencyHistogram.latency()
        for v in values { direct.recordLatency(v) }
        var counts = LatencyCounts()
        try counts.add(SparseHistogram(direct), expectedTotal: UInt64(values.count))
        let rebuilt = counts.histogram()
        #expect(rebuilt.totalCount == direct.totalCount)
        #expect(SparseHistogram(rebuilt).values == SparseHistogram(direct).values)
        #expect(SparseHistogram(rebuilt).counts == SparseHistogram(direct).counts)
        for p in [1.0, 25, 50, 90, 99, 99.9, 100] { #expect(rebuilt.valueAtPercentile(p) == direct.valueAtPercentile(p)) }
        for v in values.prefix(12) {
            #expect(LatencyCounts.highestValue(at: LatencyCounts.index(of: v)) == direct.highestEquivalentForValue(v), "\(v)")
        }
    }

    @Test func mergingIntervalsEqualsRecordingEverything() throws {
        var all = LatencyHistogram.latency()
        var counts = LatencyCounts()
        for seed: UInt64 in 1...5 {
            var part = LatencyHistogram.latency()
            for i in 0..<1000 { part.recordLatency(FileNamer.mix(seed &* 7919 &+ UInt64(i)) % 5_000_000) }
            all.add(part)
            let read = try counts.add(SparseHistogram(part), percentiles: [50, 99, 100], expectedTotal: 1000)
            #expect(read == [part.valueAtPercentile(50), part.valueAtPercentile(99), part.maxRecorded])
        }
        let mine = SparseHistogram(counts.histogram())
        let theirs = SparseHistogram(all)
        #expect(mine.min == theirs.min)
        #expect(mine.max == theirs.max)
        #expect(mine.values == theirs.values)
        #expect(mine.counts == theirs.counts)
    }

    @Test func aHistogramThatDisagreesWithItsOpsIsRefused() {
        var h = LatencyHistogram.latency()
        h.recordLatency(500)
        var counts = LatencyCounts()
        #expect(throws: LoadgenError.self) { try counts.add(SparseHistogram(h), expectedTotal: 2) }
    }
}

struct RefusedHistogramTests {
    // A histogram refused half-way (bad encoding, or fewer values than the interval's ops) must leave the running
    // sum exactly as it was: the coordinator keeps what an agent sent before it was marked lost.
    @Test func aRefusedHistogramLeavesNoTrace() throws {
        var counts = LatencyCounts()
        try counts.add(SparseHistogram(values: [1000, 5000], counts: [3, 1], min: 1000, max: 5000))
        let before = counts.sparse
        let good = SparseHistogram(values: [2000, 3000, 9000], counts: [2, 2, 2], min: 2000, max: 9000)
        #expect(throws: LoadgenError.self) { try counts.add(good, expectedTotal: 7) }
        // Two good pairs, then a varint cut short.
        let cut = try JSONDecoder().decode(SparseHistogram.self, from: Data(#"{"buckets":"0A8C6AcCgA==","max":0,"min":0}"#.utf8))
        #expect(SparseHistogram.parseBuckets(cut.bucketText) == nil)
        #expect(throws: LoadgenError.self) { try counts.add(cut) }
        #expect(counts.sparse == before)
        #expect(counts.total == 4)
    }
}

struct LiveRateTests {
    static func interval(seq: Int, elapsedMillis: UInt64, ops: UInt64) -> WireMessage.Interval {
        var tally = Tally()
        tally.ops = ops
        for _ in 0..<ops { tally.latency.recordLatency(1000) }
        return WireMessage.Interval(runID: "r", phase: .main, seq: seq, elapsedNanos: elapsedMillis * 1_000_000, tally: tally)
    }

    // Reports arrive whenever the network brings them; the live rate comes from each agent's own interval timing,
    // so two reports landing close together do not double it.
    @Test func theLiveRateIsEachAgentsLatestIntervalOnItsOwnClock() throws {
        let request = RunRequest(runID: "r", label: nil, write: WriteSpec(target: "/tmp", files: 10_000), mode: .threads, workers: 2, seed: 1)
        var aggregate = RunAggregate(request: request, agents: (0..<2).map {
            .init(agentID: "a\($0)", host: "h", address: "x", rttNanos: 0, clockOffsetNanos: 0)
        })
        try aggregate.apply(agent: 0, interval: Self.interval(seq: 1, elapsedMillis: 1000, ops: 100))
        try aggregate.apply(agent: 0, interval: Self.interval(seq: 2, elapsedMillis: 2000, ops: 300))
        try aggregate.apply(agent: 1, interval: Self.interval(seq: 1, elapsedMillis: 500, ops: 50))
        #expect(aggregate.agents[0].phase(.main).currentRate == 300)
        #expect(aggregate.agents[1].phase(.main).currentRate == 100)
        aggregate.apply(agent: 1, phaseDone: .init(runID: "r", phase: .main, status: .completed, message: nil, ops: 50, bytes: 0,
                                                   errors: 0, durationNanos: 500_000_000, firstDoneNanos: 0, lastDoneNanos: 500_000_000))
        #expect(aggregate.agents[1].phase(.main).currentRate == 0)
    }
}

struct AsyncFetchLoopTests {
    @Test(arguments: [(1, 2, 1), (16, 2, 1), (32, 2, 1), (33, 2, 2), (4000, 2, 2), (100, 64, 4), (16, 1, 1), (0, 8, 1)])
    func oneEventLoopPer32ConnectionsAtMostOnePerCore(slots: Int, cores: Int, loops: Int) {
        #expect(AsyncFetchExecutor.loopCount(slots: slots, cores: cores) == loops)
    }

    /// The async fetch loop's timers against a plain model: each slot armed at most once, arming earlier moves it up,
    /// arming later keeps the earlier time, and slots come off in time order.
    @Test func slotTimersFireInTimeOrderAndKeepTheEarliestArming() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            let slots = Int.random(in: 1...40, using: &generator)
            var timers = SlotTimers(slots: slots)
            var model: [Int: UInt64] = [:]
            var now: UInt64 = 0
            for _ in 0..<400 {
                if Bool.random(using: &generator) {
                    let slot = Int.random(in: 0..<slots, using: &generator)
                    let at = now + UInt64.random(in: 0...1000, using: &generator)
                    timers.arm(slot, at: at)
                    model[slot] = min(model[slot] ?? .max, at)
                } else {
                    now += UInt64.random(in: 0...300, using: &generator)
                    var fired: [(Int, UInt64)] = []
                    while let slot = timers.takeDue(now: now) { fired.append((slot, model[slot]!)); model[slot] = nil }
                    #expect(fired.map(\.1) == fired.map(\.1).sorted(), "in time order")
                    #expect(!model.values.contains { $0 <= now }, "every due slot fired")
                }
                #expect(timers.earliest == model.values.min())
            }
        }
    }
}
