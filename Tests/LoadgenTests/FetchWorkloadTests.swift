import Foundation
import Testing
@testable import LoadgenCore
@testable import LoadgenWorkloads
@testable import LoadgenAgent

/// The fetch workload against a server in this process: counts, latency, faults, TLS, in every mode.
@Suite(.timeLimit(.minutes(2)))
struct FetchWorkloadTests {
    static func request(_ urls: [String], mode: ExecutionMode, workers: Int = 2, requests: Int? = nil, repeatCount: Int = 1,
                        rate: Double? = nil, timeout: UInt64 = 10_000_000_000, method: HTTPMethod = .get,
                        caFile: String? = nil, insecure: Bool = false) -> RunRequest {
        RunRequest(runID: "f-\(UUID().uuidString.prefix(8))",
                   fetch: FetchSpec(urls: urls, repeatCount: repeatCount, requests: requests, rate: rate,
                                    timeoutNanos: timeout, method: method, caFile: caFile, insecureTLS: insecure),
                   mode: mode, workers: workers, seed: 1)
    }

    @Test(arguments: ExecutionMode.allCases)
    func countsEqualTheServersCountInEveryMode(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            let messages = await RunHarness.perform(Self.request([server.url()], mode: mode, workers: 3, requests: 40),
                                                    phases: [.main])
            let done = try #require(RunHarness.done(messages), "\(messages)")
            #expect(done.status == .completed)
            #expect(done.ops == 40)
            #expect(done.errors == 0)
            #expect(server.requests == 40)
            let tally = try RunHarness.tally(messages)
            #expect(tally.ops == 40)
            #expect(tally.statusClasses[1] == 40)
            #expect(tally.latency.totalCount == 40)
            #expect(tally.bytes == 40 * 5)
        }
    }

    /// Async slots share one tally per event loop (one histogram per slot cost 270 KB each): with many more slots
    /// than loops, hand-overs at ticks and at the loops' last finishes still account for every request once.
    @Test func manyAsyncSlotsShareTheirLoopsTalliesAndLoseNothing() async throws {
        try await TestHTTPServer.with { server in
            // Each slot waits on three 150 ms responses, so the run spans about five 100 ms intervals: a slot hands
            // over at its first finish after a tick, so a run of barely two intervals may show ops in one.
            var request = Self.request([server.url("/delay/150"), server.url("/")], mode: .async, workers: 25, requests: 150)
            request.intervalNanos = 100_000_000
            let messages = await RunHarness.perform(request, phases: [.main])
            let done = try #require(RunHarness.done(messages), "\(messages)")
            #expect(done.status == .completed)
            #expect(done.ops == 150)
            #expect(server.requests == 150)
            let tally = try RunHarness.tally(messages)
            #expect(tally.ops == 150)
            #expect(tally.latency.totalCount == 150)
            #expect(tally.targets.map(\.ops) == [75, 75])
            var withOps = 0
            for case .interval(let i) in messages where i.phase == .main { if try i.tally().ops > 0 { withOps += 1 } }
            #expect(withOps >= 2, "the run should span several report intervals")
        }
    }

    /// A ramp from 50/s to 150/s over one second sends exactly the 100 requests due in it.
    @Test(arguments: [ExecutionMode.threads, .async])
    func aRampSendsTheRequestsDueUnderIt(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            var request = Self.request([server.url()], mode: mode, workers: 4, rate: 50)
            request.fetch?.rampTo = 150
            request.fetch?.durationNanos = 1_000_000_000
            let messages = await RunHarness.perform(request, phases: [.main])
            let done = try #require(RunHarness.done(messages), "\(messages)")
            #expect(done.status == .completed)
            #expect(done.ops == 100)
            #expect(server.requests == 100)
        }
    }

    @Test(arguments: [ExecutionMode.threads, .async])
    func aFixedServerDelayIsTheMedian(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            let messages = await RunHarness.perform(Self.request([server.url("/delay/60")], mode: mode, workers: 2, requests: 10),
                                                    phases: [.main])
            let tally = try RunHarness.tally(messages)
            #expect(tally.ops == 10)
            let p50 = Double(tally.latency.valueAtPercentile(50)) / 1e6
            #expect(p50 >= 60 && p50 < 90, "p50 \(p50) ms")
        }
    }

    /// Under --rate, a server that stalls shows in the percentiles: latency counts from each request's due time,
    /// so the requests that fell due during the stall carry it, though every worker was stuck waiting.
    @Test(arguments: [ExecutionMode.threads, .async])
    func aServerPauseUnderRateShowsInP90(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            let request = Self.request([server.url()], mode: mode, workers: 2, requests: 50, rate: 50)
            let messages = await RunHarness.perform(request, phases: [.main]) {
                try? await Task.sleep(for: .milliseconds(300))
                server.pause(seconds: 0.5)
            }
            let tally = try RunHarness.tally(messages)
            #expect(tally.ops == 50)
            let p90 = Double(tally.latency.valueAtPercentile(90)) / 1e6
            #expect(p90 >= 150, "p90 \(p90) ms: the stall was hidden")
        }
    }

    @Test(arguments: [ExecutionMode.threads, .async])
    func refusedConnectionsAreConnectErrorsAndFailTheRun(mode: ExecutionMode) async throws {
        let port = try Self.unusedPort()
        let messages = await RunHarness.perform(Self.request(["http://127.0.0.1:\(port)/"], mode: mode, requests: 6),
                                                phases: [.main])
        let done = try #require(RunHarness.done(messages))
        #expect(done.status == .failed)
        #expect(done.ops == 0)
        #expect(done.errors == 6)
        #expect(try RunHarness.tally(messages).errors[.connect] == 6)
    }

    @Test(arguments: [ExecutionMode.threads, .async])
    func aTricklingServerIsCutOffAtTheTimeout(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            let started = Date()
            let messages = await RunHarness.perform(
                Self.request([server.url("/trickle")], mode: mode, workers: 2, requests: 2, timeout: 1_000_000_000), phases: [.main])
            let elapsed = Date().timeIntervalSince(started)
            let tally = try RunHarness.tally(messages)
            #expect(tally.errors[.timeout] == 2)
            // One second each (two in parallel), however slowly bytes keep coming; generous for a loaded machine.
            #expect(elapsed < 8, "took \(elapsed)s")
        }
    }

    // Two servers on one host, different ports: each request must reach its own port (addresses are cached per
    // host and port, and a connection is reused only for the same origin).
    @Test(arguments: [ExecutionMode.threads, .async])
    func twoPortsOnOneHostEachGetTheirRequests(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { first in
            try await TestHTTPServer.with { second in
                let tally = try RunHarness.tally(await RunHarness.perform(
                    Self.request([first.url("/"), second.url("/")], mode: mode, workers: 1, requests: 6), phases: [.main]))
                #expect(tally.ops == 6)
                #expect(first.requests == 3)
                #expect(second.requests == 3)
            }
        }
    }

    // Fast and stalled requests alternate on one worker: each stalled one must time out at its own deadline, not
    // when the server finally answers (the async slot's one timer re-arms itself from request to request).
    @Test(arguments: [ExecutionMode.threads, .async])
    func eachRequestTimesOutAtItsOwnDeadline(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            let started = Date()
            let tally = try RunHarness.tally(await RunHarness.perform(
                Self.request([server.url("/"), server.url("/delay/3000")], mode: mode, workers: 1, requests: 4,
                             timeout: 300_000_000), phases: [.main]))
            let elapsed = Date().timeIntervalSince(started)
            #expect(tally.ops == 2)
            #expect(tally.errors[.timeout] == 2)
            // Two timeouts of 0.3 s in a row; waiting for the server would take 6 s.
            #expect(elapsed < 4, "took \(elapsed)s")
        }
    }

    @Test(arguments: [ExecutionMode.threads, .async])
    func redirectsAreFollowedAndLoopsStopAtTen(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            let chain = try RunHarness.tally(await RunHarness.perform(
                Self.request([server.url("/redirect/3")], mode: mode, workers: 1, requests: 2), phases: [.main]))
            #expect(chain.ops == 2)
            #expect(chain.redirects == 6)
            #expect(chain.statusClasses[1] == 2)
            let loop = try RunHarness.tally(await RunHarness.perform(
                Self.request([server.url("/loop")], mode: mode, workers: 1, requests: 1), phases: [.main]))
            #expect(loop.errors[.redirects] == 1)
            #expect(loop.ops == 0)
        }
    }

    @Test(arguments: [ExecutionMode.threads, .async])
    func bodiesAreCountedAndDiscarded(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            let urls = [server.url("/big/\(32 << 20)"), server.url("/chunked"), server.url("/close")]
            let tally = try RunHarness.tally(await RunHarness.perform(
                Self.request(urls, mode: mode, workers: 1, requests: 3), phases: [.main]))
            #expect(tally.ops == 3)
            #expect(tally.targets.map(\.bytes) == [UInt64(32 << 20), 11, 13])
        }
    }

    @Test(arguments: [ExecutionMode.threads, .async])
    func statusClassesAndPerURLFigures(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            let urls = [server.url(), server.url("/status/404"), server.url("/status/503")]
            let tally = try RunHarness.tally(await RunHarness.perform(
                Self.request(urls, mode: mode, workers: 2, repeatCount: 2), phases: [.main]))
            #expect(tally.ops == 6)
            #expect(tally.errors.total == 0)
            #expect(tally.statusClasses == [0, 2, 0, 2, 2])
            #expect(tally.targets.map(\.ops) == [2, 2, 2])
            #expect(tally.targets[1].statusClasses == [0, 0, 0, 2, 0])
        }
    }

    @Test(arguments: [ExecutionMode.threads, .async])
    func headRequestsHaveNoBody(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            let tally = try RunHarness.tally(await RunHarness.perform(
                Self.request([server.url()], mode: mode, workers: 1, requests: 3, method: .head), phases: [.main]))
            #expect(tally.ops == 3)
            #expect(tally.bytes == 0)
        }
    }

    @Test(arguments: [ExecutionMode.threads, .async])
    func dnsFailuresAreCountedByKind(mode: ExecutionMode) async throws {
        let tally = try RunHarness.tally(await RunHarness.perform(
            Self.request(["http://nonexistent.invalid/"], mode: mode, workers: 1, requests: 2), phases: [.main]))
        #expect(tally.errors[.dns] == 2)
    }

    @Test(arguments: [ExecutionMode.threads, .async])
    func tlsIsVerifiedAgainstTheGivenCA(mode: ExecutionMode) async throws {
        let dir = try TestSupport.makeTemporaryDirectory("lgtls")
        defer { TestSupport.remove(dir) }
        let (caFile, context) = try TestHTTPServer.makeCertificates(in: dir)
        try await TestHTTPServer.with(tls: context) { server in
            for host in ["localhost", "127.0.0.1"] {
                let url = server.url(scheme: "https", host: host)
                let trusted = try RunHarness.tally(await RunHarness.perform(
                    Self.request([url], mode: mode, workers: 1, requests: 3, caFile: caFile), phases: [.main]))
                #expect(trusted.ops == 3, "\(host): \(trusted.errorSamples)")
                let untrusted = try RunHarness.tally(await RunHarness.perform(
                    Self.request([url], mode: mode, workers: 1, requests: 2), phases: [.main]))
                #expect(untrusted.errors[.tls] == 2, "\(host): \(untrusted.errorSamples)")
                let insecure = try RunHarness.tally(await RunHarness.perform(
                    Self.request([url], mode: mode, workers: 1, requests: 2, insecure: true), phases: [.main]))
                #expect(insecure.ops == 2)
            }
        }
    }

    /// A plain-HTTP run sets TLS up only when a redirect first leads to https (making it loads the trust store),
    /// and the redirect then works as if it had been set up from the start.
    /// A server that closes a keep-alive connection behind the client's back: while the client waits for its next due
    /// time, or right after a response. Whether the close is seen while idle or only when the next request meets it
    /// (a GET is then sent once more on a new connection), no request fails, and after an idle close every request
    /// has a connection of its own.
    @Test(arguments: [(ExecutionMode.threads, "linger"), (.async, "linger"), (.threads, "hangup"), (.async, "hangup")])
    func aKeepAliveClosedByTheServerIsReplacedWithoutErrors(mode: ExecutionMode, path: String) async throws {
        try await TestHTTPServer.with { server in
            let rate: Double? = path == "linger" ? 20 : nil
            let messages = await RunHarness.perform(Self.request([server.url("/" + path)], mode: mode, workers: 1, requests: 8,
                                                                 rate: rate), phases: [.main])
            let done = try #require(RunHarness.done(messages), "\(messages)")
            #expect(done.ops == 8 && done.errors == 0, "\(messages)")
            #expect(server.requests == 8)
            if path == "linger" { #expect(server.connections == 8, "each request after an idle close on a new connection") }
        }
    }

    /// TLS keep-alive in the gaps of an open model: the session outlives the waits for due times, so one connection
    /// carries every request.
    @Test(arguments: [ExecutionMode.threads, .async])
    func aTLSConnectionStaysOpenBetweenDueTimes(mode: ExecutionMode) async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let (caFile, context) = try TestHTTPServer.makeCertificates(in: dir)
        try await TestHTTPServer.with(tls: context) { server in
            let messages = await RunHarness.perform(Self.request([server.url(scheme: "https")], mode: mode, workers: 1,
                                                                 requests: 6, rate: 20, caFile: caFile), phases: [.main])
            let done = try #require(RunHarness.done(messages), "\(messages)")
            #expect(done.ops == 6 && done.errors == 0, "\(messages)")
            #expect(server.connections == 1)
        }
    }

    @Test(arguments: [ExecutionMode.threads, .async])
    func aRedirectToHTTPSSetsTLSUpWhenFirstNeeded(mode: ExecutionMode) async throws {
        let dir = try TestSupport.makeTemporaryDirectory("lgtls")
        defer { TestSupport.remove(dir) }
        let (_, context) = try TestHTTPServer.makeCertificates(in: dir)
        let engine = try FetchEngine(spec: FetchSpec(urls: ["http://127.0.0.1:1/"], repeatCount: 1))
        #expect(!engine.tls.isMade)
        #expect(try FetchEngine(spec: FetchSpec(urls: ["https://127.0.0.1:1/"], repeatCount: 1)).tls.isMade)
        try await TestHTTPServer.with(tls: context) { secure in
            try await TestHTTPServer.with { plain in
                let tally = try RunHarness.tally(await RunHarness.perform(
                    Self.request([plain.url("/https/\(secure.port)")], mode: mode, workers: 1, requests: 3, insecure: true),
                    phases: [.main]))
                #expect(tally.ops == 3, "\(tally.errorSamples)")
                #expect(tally.redirects == 3)
                #expect(secure.requests == 3)
            }
        }
    }

    static func unusedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// The request plan shared by blocking workers and async slots.
struct RequestScheduleTests {
    @Test func aClosedLoopSendsItsShareAtOnceToInterleavedURLs() {
        var plan = RequestSchedule(share: Share.interleaved(total: 7, workers: 3, worker: 1), startAtNanos: 1000,
                                   deadline: nil, pace: nil, urlCount: 2)
        #expect(plan.step(now: 5000) == .send(urlIndex: 1, startNanos: 5000, lag: nil))   // request 1
        #expect(plan.step(now: 6000) == .send(urlIndex: 0, startNanos: 6000, lag: nil))   // request 4
        #expect(plan.step(now: 7000) == .done)                                   // 7 is past the total
    }

    @Test func underARateEachRequestWaitsForItsDueTimeAndLatencyStartsThere() {
        // 1,000 requests a second from t = 1,000,000: request i is due at 1,000,000 + i ms.
        var plan = RequestSchedule(share: Share.interleaved(total: nil, workers: 2, worker: 1), startAtNanos: 1_000_000,
                                   deadline: 1_000_000 + 4_000_000, pace: Pace(rate: 1000), urlCount: 3)
        #expect(plan.step(now: 1_500_000) == .wait(untilNanos: 2_000_000))
        #expect(plan.step(now: 2_000_000) == .send(urlIndex: 1, startNanos: 2_000_000, lag: ScheduleLag(nanos: 0)))
        // Late: sent at once, latency from the due time (4 ms), 0.5 ms late.
        #expect(plan.step(now: 4_500_000) == .send(urlIndex: 0, startNanos: 4_000_000, lag: ScheduleLag(nanos: 500_000)))
        // Request 5 would fall due after the deadline (5 ms): it is not sent.
        #expect(plan.step(now: 4_600_000) == .done)
    }

    @Test func aGeneratorThatFellBehindStopsAtTheDeadline() {
        // Request 1 was due at 1 ms, long before the deadline, but the worker reaches it only after: the run ends
        // there (the request counts as planned and not sent), rather than running on past --duration.
        var plan = RequestSchedule(share: Share.interleaved(total: nil, workers: 1, worker: 0), startAtNanos: 0,
                                   deadline: 4_000_000, pace: Pace(rate: 1000), urlCount: 1)
        #expect(plan.step(now: 0) == .send(urlIndex: 0, startNanos: 0, lag: ScheduleLag(nanos: 0)))
        #expect(plan.step(now: 4_000_000) == .done)
    }

    @Test func aRampMovesTheRateLinearlyUpOrDown() {
        // 10/s rising to 30/s over 10 s: requests due by t are 10t + t², 200 in all.
        let up = Pace(rate: 10, rampTo: 30, durationNanos: 10_000_000_000)
        #expect(up.dueNanos(0) == 0)
        #expect(up.dueNanos(11) == 1_000_000_000)
        #expect(up.dueNanos(200) == 10_000_000_000)
        // 30/s falling to 10/s: due by t are 30t - t²; the rate would reach zero at 15 s, after 225 requests.
        let down = Pace(rate: 30, rampTo: 10, durationNanos: 10_000_000_000)
        #expect(down.dueNanos(56) == 2_000_000_000)
        #expect(down.dueNanos(200) == 10_000_000_000)
        #expect(down.dueNanos(226) == nil)
        // Rising, the gaps shrink; falling, they grow.
        #expect(up.dueNanos(2)! - up.dueNanos(1)! > up.dueNanos(151)! - up.dueNanos(150)!)
        #expect(down.dueNanos(2)! - down.dueNanos(1)! < down.dueNanos(151)! - down.dueNanos(150)!)
        // Without a ramp, the steady rate.
        #expect(Pace(rate: 1000).dueNanos(3) == 3_000_000)
    }

    @Test func aDurationEndsAClosedLoopAtItsDeadline() {
        var plan = RequestSchedule(share: Share.interleaved(total: nil, workers: 1, worker: 0), startAtNanos: 0,
                                   deadline: 100, pace: nil, urlCount: 1)
        #expect(plan.step(now: 99) == .send(urlIndex: 0, startNanos: 99, lag: nil))
        #expect(plan.step(now: 100) == .done)
    }
}

/// The open files a run needs, against a given limit.
struct OpenFileBudgetTests {
    static func request(_ mode: ExecutionMode, workers: Int, write: Bool = false) -> RunRequest {
        write ? RunRequest(runID: "o", write: WriteSpec(target: "/tmp", files: 10), mode: mode, workers: workers, seed: 1)
            : RunRequest(runID: "o", fetch: FetchSpec(urls: ["http://127.0.0.1:1/"]), mode: mode, workers: workers, seed: 1)
    }

    @Test func aFilePerWorkerThreePerProcessLoopsForAsyncFetchAndSlotsForAsyncWrites() throws {
        #expect(OpenFileBudget.needed(by: Self.request(.async, workers: 1000), cores: 4).files == 1000 + 32 + 12)
        #expect(OpenFileBudget.needed(by: Self.request(.threads, workers: 900), cores: 4).files == 932)
        #expect(OpenFileBudget.needed(by: Self.request(.processes, workers: 400), cores: 4).files == 1232)
        #expect(OpenFileBudget.needed(by: Self.request(.async, workers: 1000, write: true), cores: 4).files == 1000)
        try OpenFileBudget.check(Self.request(.threads, workers: 900), agentID: "a", limit: 1024)
        try OpenFileBudget.check(Self.request(.async, workers: 1000, write: true), agentID: "a", limit: 1024)
        #expect(throws: LoadgenError.self) { try OpenFileBudget.check(Self.request(.async, workers: 1000), agentID: "a", limit: 1024) }
        #expect(throws: LoadgenError.self) { try OpenFileBudget.check(Self.request(.processes, workers: 400), agentID: "a", limit: 1024) }
    }
}

/// A worker's tally: latencies buffered, then into the histogram; nothing lost at a tick or at the end.
struct TickedTallyTests {
    final class Collect: TallySink, @unchecked Sendable {
        let got = Locked<[Tally]>([])
        func handOver(_ tally: Tally, latencies: UnsafeBufferPointer<UInt64>, lags: UnsafeBufferPointer<UInt64>) {
            self.got.withLock { $0.append(tally.adding(latencies, lags: lags)) }
        }
    }

    @Test func latenciesAreBufferedThenHandedOverExactly() {
        let control = WorkerControl(stop: StopSignal(), startAtNanos: 0, tickNanos: 1_000_000_000)
        let sink = Collect()
        var counts = TickedTally(control: control, now: 0)
        for i in 1...10 { counts.tally.ops &+= 1; counts.recordLatency(UInt64(i) * 1000) }
        // A slow worker's few latencies wait in the buffer: its histogram is never written.
        #expect(counts.tally.latency.totalCount == 0)
        counts.tick(500_000_000, to: sink)
        #expect(sink.got.value.isEmpty)
        counts.tick(1_000_000_000, to: sink)
        // A busy worker's latencies fill its histogram a buffer at a time; the rest go over with the tally.
        for i in 1...1000 { counts.tally.ops &+= 1; counts.recordLatency(UInt64(i)) }
        for i in 1...2000 { counts.tally.ops &+= 1; counts.recordLatency(UInt64(i)) }
        #expect(counts.tally.latency.totalCount == UInt64(3000 / TickedTally.bufferedLatencies * TickedTally.bufferedLatencies))
        counts.handOver(to: sink)
        let got = sink.got.value
        #expect(got.count == 2)
        #expect(got.map(\.latency.totalCount) == [10, 3000])
        #expect(got.map(\.latencySumNanos) == [55_000, 500_500 + 2_001_000])
        #expect(got[0].latency.maxRecorded == 10_000)
        #expect(got.map(\.ops) == [10, 3000])
    }
}

/// An agent's --max-rate holds for a ramp's peak, not only its start.
struct RampPolicyTests {
    @Test func aRampPastTheAgentsMaxRateIsRefused() throws {
        let policy = AgentPolicy(allowedRoots: nil, maxRate: 100)
        var fetch = FetchSpec(urls: ["http://127.0.0.1:1/"], durationNanos: 1_000_000_000, rate: 50, rampTo: 80)
        try policy.check(RunRequest(runID: "r", fetch: fetch, mode: .async, workers: 2, seed: 1))
        fetch.rampTo = 500
        #expect(throws: LoadgenError.self) { try policy.check(RunRequest(runID: "r", fetch: fetch, mode: .async, workers: 2, seed: 1)) }
    }
}

/// The reporter of a phase: every interval it takes from the mailbox goes out, even when the workers finish while
/// it is sending one.
struct PhaseRunnerTests {
    /// Hands over one operation every millisecond for 250 ms.
    struct Trickle: PhaseExecutor {
        func runPhase(_ phase: Phase, control: WorkerControl, mailbox: TallyMailbox) async -> [WorkerResult] {
            MonotonicClock.sleep(untilNanos: control.startAtNanos)
            for _ in 0..<250 {
                var tally = Tally()
                tally.ops = 1
                tally.recordLatency(1000)
                mailbox.handOver(tally)
                try? await Task.sleep(for: .milliseconds(1))
            }
            return [WorkerResult(doneAtNanos: MonotonicClock.nowNanos())]
        }
    }

    /// A transport that takes 80 ms to send and, like NIO's writer, drops what a cancelled task sends: the reporter's
    /// second interval (at about 205 ms) is still being sent when the workers finish (about 250 ms).
    @Test func anIntervalBeingSentWhenTheWorkersFinishStillArrives() async {
        let sent = Locked<[WireMessage]>([])
        let runner = PhaseRunner(runID: "p", tickNanos: 100_000_000) { message in
            if case .interval = message { try? await Task.sleep(for: .milliseconds(80)) }
            guard !Task.isCancelled else { return }
            sent.withLock { $0.append(message) }
        }
        let done = await runner.run(.main, startAtNanos: MonotonicClock.nowNanos() + 1_000_000, executor: Trickle(),
                                    stop: StopSignal(), finish: { nil })
        let intervals = sent.value.compactMap { message -> WireMessage.Interval? in
            if case .interval(let interval) = message { return interval }
            return nil
        }
        #expect(done.ops >= 200)
        #expect(intervals.reduce(0) { $0 + $1.ops } == done.ops, "the intervals sum to the phase")
        #expect(intervals.map(\.seq) == Array(1...intervals.count), "in order, none missing")
    }
}
