import Foundation
import LoadgenAgent
import LoadgenCoordinator
import LoadgenStore
import LoadgenWire
import Testing
@testable import LoadgenCore
@testable import LoadgenWorkloads

/// The statistics behind `history compare` on sets: exact distributions, and the false-alarm rate they promise.
struct ThroughputJudgmentTests {
    /// SplitMix64 and Box–Muller: repeatable normal draws.
    struct Draws {
        var state: UInt64
        mutating func uniform() -> Double {
            self.state &+= 0x9E37_79B9_7F4A_7C15
            var z = self.state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Double((z ^ (z >> 31)) >> 11) / Double(1 << 53)
        }
        mutating func normal() -> Double {
            let u = max(self.uniform(), 1e-300), v = self.uniform()
            return (-2 * log(u)).squareRoot() * cos(2 * .pi * v)
        }
        /// Throughputs around `median`, log-normal with spread `sigma` (5% is typical of this machine's runs).
        mutating func runs(_ n: Int, median: Double, sigma: Double = 0.05) -> [Double] {
            (0..<n).map { _ in median * exp(sigma * self.normal()) }
        }
    }

    @Test func theMannWhitneyDistributionIsExact() {
        // Two against two: arrangements xxyy, xyxy, xyyx, yxxy, yxyx, yyxx give U = 0, 1, 2, 2, 3, 4.
        #expect(Statistics.mannWhitneyCounts(m: 2, n: 2) == [1, 1, 2, 1, 1])
        #expect(Statistics.mannWhitneyCounts(m: 5, n: 5).reduce(0, +) == 252)
        // Five a side: P(U <= 2) = 4/252 <= 0.025 < P(U <= 3) = 7/252, so the interval is [D(3), D(23)].
        #expect(Statistics.mannWhitneyCriticalCount(m: 5, n: 5, alpha: 0.05) == 3)
        // Three a side: even U = 0 has probability 1/20 > 0.025: no 95% interval exists.
        #expect(Statistics.mannWhitneyCriticalCount(m: 3, n: 3, alpha: 0.05) == 0)
    }

    @Test func studentsTMatchesItsTables() {
        #expect(abs(Statistics.studentTQuantile(0.975, degrees: 4) - 2.776) < 0.001)
        #expect(abs(Statistics.studentTQuantile(0.975, degrees: 9) - 2.262) < 0.001)
        #expect(abs(Statistics.studentTQuantile(0.975, degrees: 1000) - 1.962) < 0.001)
    }

    /// Sets from one distribution: the judgment calls a difference in at most 5% of trials (it is exact for the
    /// rank method; the prediction interval is exact for log-normal noise), within Monte Carlo error.
    @Test(arguments: [(5, 5), (8, 8), (4, 6), (1, 8)])
    func noDifferenceRaisesFewFalseAlarms(sizes: (Int, Int)) {
        var draws = Draws(state: UInt64(sizes.0 * 100 + sizes.1))
        let trials = 2000
        var alarms = 0
        for _ in 0..<trials {
            let a = draws.runs(sizes.0, median: 10_000), b = draws.runs(sizes.1, median: 10_000)
            if ThroughputJudgment.judge(a: a, b: b).significant { alarms += 1 }
        }
        let rate = Double(alarms) / Double(trials)
        // 5% stated; binomial sd at 2000 trials is 0.5%: 3 sd above.
        #expect(rate <= 0.065, "false alarms \(rate) with \(sizes)")
    }

    /// A real 30% slow-down (with 5% noise) is caught nearly always, and the interval holds the true ratio.
    @Test(arguments: [(5, 5), (1, 8)])
    func aThirtyPercentSlowDownIsCaught(sizes: (Int, Int)) {
        var draws = Draws(state: 42)
        var caught = 0, covered = 0
        for _ in 0..<500 {
            let a = draws.runs(sizes.0, median: 10_000), b = draws.runs(sizes.1, median: 7_000)
            let j = ThroughputJudgment.judge(a: a, b: b)
            if j.significant, j.ratio < 1 { caught += 1 }
            if let low = j.low, let high = j.high, low <= 0.7, 0.7 <= high { covered += 1 }
        }
        #expect(caught >= 475, "caught \(caught) of 500")
        #expect(covered >= 450, "the interval held 0.7 in \(covered) of 500")
    }

    @Test func theSentencesSayWhatWasFound() {
        let slower = ThroughputJudgment.judge(a: [100, 101, 99, 100, 102], b: [77, 78, 76, 77, 79])
        #expect(slower.significant && slower.sentence.hasPrefix("B is 23.0% slower (95% CI "), "\(slower.sentence)")
        let same = ThroughputJudgment.judge(a: [100, 103, 97, 101, 99], b: [101, 98, 102, 100, 99])
        #expect(!same.significant && same.sentence.hasPrefix("no significant difference"), "\(same.sentence)")
        let tiny = ThroughputJudgment.judge(a: [100, 101, 102], b: [50, 51, 52])
        #expect(!tiny.significant && tiny.sentence.contains("use at least 4 runs a side"), "\(tiny.sentence)")
        let single = ThroughputJudgment.judge(a: [100], b: [90])
        #expect(single.method == .single && !single.significant && single.sentence.contains("--runs"))
    }
}

/// The capacity search on simulated targets: each step passes when its rate is within the target's capacity.
struct CapacitySearchTests {
    /// Runs a search against a target that keeps its service level up to `knee` and a generator that keeps its
    /// schedule up to `generatorLimit`.
    static func search(knee: Double, generatorLimit: Double = .infinity, start: Double = 100,
                       maxRate: Double? = nil) -> CapacitySearch {
        var search = CapacitySearch(startRate: start, maxRate: maxRate)
        while let rate = search.next() {
            let outcome: CapacitySearch.Outcome = rate > generatorLimit ? .invalid : (rate <= knee ? .pass : .fail)
            search.record(.init(rate: rate, outcome: outcome, runID: "r\(search.steps.count)",
                                reason: outcome == .pass ? nil : "over"))
        }
        return search
    }

    @Test(arguments: [1000.0, 333, 5000, 101, 777_777])
    func itFindsTheKneeWithinFivePercent(knee: Double) {
        let search = Self.search(knee: knee)
        let found = try! #require(search.passed?.rate)
        #expect(found <= knee && found >= knee * 0.95, "found \(found) for a knee at \(knee)")
        #expect(search.failed!.rate > knee)
        #expect(!search.limitedByGenerator)
        #expect(search.steps.count < 40)
    }

    @Test func aStartAboveTheKneeHalvesDownToIt() {
        let search = Self.search(knee: 150, start: 5000)
        let found = try! #require(search.passed?.rate)
        #expect(found <= 150 && found >= 150 * 0.95)
        #expect(search.steps.first?.outcome == .fail)
    }

    /// A generator that falls behind at 700 never passes a step: the answer stays below it and says the
    /// generator, not the target (whose knee is 1000), was the limit.
    @Test func aGeneratorThatFallsBehindBoundsTheSearchAndIsNamed() {
        let search = Self.search(knee: 1000, generatorLimit: 700)
        let found = try! #require(search.passed?.rate)
        #expect(found <= 700 && found >= 700 * 0.95)
        #expect(search.limitedByGenerator)
        #expect(search.conclusion.contains("the generator, not the target"))
        #expect(!search.steps.contains { $0.outcome == .pass && $0.rate > 700 })
    }

    @Test func theAgentsMaxRateEndsTheGrowth() {
        let search = Self.search(knee: 1e9, maxRate: 3000)
        #expect(search.passed?.rate == 3000)
        #expect(search.next() == nil)
        #expect(search.conclusion.contains("--max-rate"))
    }

    @Test func nothingPassingIsSaid() {
        let search = Self.search(knee: 0.1, start: 8)
        #expect(search.passed == nil)
        #expect(search.conclusion.hasPrefix("No rate passed"))
    }

    @Test func serviceLevelsParseAndRefuseWithASentence() throws {
        let slo = try ServiceLevel.parse("p99=50ms,errors=0.5%")
        #expect(slo.percentile == 99 && slo.latencyNanos == 50_000_000 && slo.errorsPct == 0.5)
        #expect(try ServiceLevel.parse("p99.9=1s").errorsPct == 1)
        for (bad, words) in [("p98=5ms", "'p98'"), ("errors=1%", "bounds no latency"), ("p99=fast", "'fast'"),
                             ("p99=5ms,errors=5", "'5'"), ("p99=5ms,p50=1ms", "twice"), ("p99", "no value")] {
            do {
                _ = try ServiceLevel.parse(bad)
                Issue.record("\(bad) was accepted")
            } catch {
                #expect(error.message.contains(words), "\(bad): \(error.message)")
            }
        }
    }
}

/// Every validity reason, each triggered for real: by runs on live agents, a scripted agent, and the in-process
/// HTTP server.
@Suite(.timeLimit(.minutes(2)))
struct ValidityTests {
    static func reasons(_ report: RunReport) -> [String: RunValidity.Verdict] {
        Dictionary((report.validity?.reasons ?? []).map { ($0.code, $0.verdict) }, uniquingKeysWith: { a, _ in a })
    }

    static func fetch(_ spec: FetchSpec, mode: ExecutionMode = .threads, workers: Int = 2, cores: Int = 2) async throws -> RunReport {
        try await LiveAgents.with(count: 1, policy: AgentPolicy(allowedRoots: ["/tmp"]), cores: cores) { addresses in
            try await RemoteAgentLink.with(addresses: addresses) { links in
                try await CoordinatorSession.with(links: links, configuration: DistributedTests.coordinator(nil)) { session throws(LoadgenError) in
                    _ = try await session.connect()
                    return try await session.run(RunRequest(runID: "v-\(UUID().uuidString.prefix(8))", fetch: spec, mode: mode,
                                                            workers: workers, seed: 1),
                                                 observer: NullObserver(), recorder: nil).report
                }
            }
        }
    }

    /// An easy run is valid; the same with 50 requests is suspect for its p99.
    @Test func anEasyRunIsValidAndAShortOneSuspect() async throws {
        try await TestHTTPServer.with { server in
            // Paced, so the agent (whose process here also runs the server and the coordinator) is not saturated.
            let easy = try await Self.fetch(FetchSpec(urls: [server.url("/")], durationNanos: 1_500_000_000, rate: 1000))
            #expect(easy.validity?.verdict == .valid, "\(easy.validity?.reasons.map(\.message) ?? [])")
            #expect(easy.ops >= 1000)
            let short = try await Self.fetch(FetchSpec(urls: [server.url("/")], durationNanos: 500_000_000, rate: 100))
            #expect(Self.reasons(short) == ["few_samples": .suspect])
            #expect(short.validity?.verdict == .suspect)
        }
    }

    /// One sequential worker asked for 200 requests a second of a server that takes 50 ms each (20 a second at
    /// most): it falls behind (invalid), and what it sent started late (suspect).
    @Test func aGeneratorAskedForTooMuchIsInvalid() async throws {
        try await TestHTTPServer.with { server in
            let report = try await Self.fetch(FetchSpec(urls: [server.url("/delay/50")], durationNanos: 1_500_000_000, rate: 200),
                                              mode: .sequential, workers: 1)
            let reasons = Self.reasons(report)
            #expect(reasons["generator_behind"] == .invalid, "\(reasons)")
            #expect(reasons["schedule_lag"] == .suspect, "\(reasons)")
            #expect(report.validity?.verdict == .invalid)
            let behind = try #require(report.validity?.reasons.first { $0.code == "generator_behind" })
            // 300 planned (200/s for 1.5 s); about 30 could be sent.
            #expect(behind.message.contains("300 planned"), "\(behind.message)")
            #expect((behind.value ?? 100) < 20)
        }
    }

    /// Errors over 1% (a status the run did not expect), and failure: every request failed.
    @Test func errorsAndFailureAreNamed() async throws {
        try await TestHTTPServer.with { server in
            var spec = FetchSpec(urls: [server.url("/"), server.url("/status/500")], requests: 400)
            spec.expectStatus = "2xx"
            let half = try await Self.fetch(spec)
            #expect(Self.reasons(half)["errors"] == .suspect, "\(Self.reasons(half))")
            var failing = FetchSpec(urls: [server.url("/status/500")], requests: 100)
            failing.expectStatus = "2xx"
            let failed = try await Self.fetch(failing)
            #expect(Self.reasons(failed)["not_completed"] == .invalid, "\(Self.reasons(failed))")
        }
    }

    /// An agent that says it has one core, serving a closed loop against a server in the same process (whose CPU
    /// counts as the agent process's): busy past 90% of its one core.
    @Test func aSaturatedAgentMakesTheRunSuspect() async throws {
        try await TestHTTPServer.with { server in
            let report = try await Self.fetch(FetchSpec(urls: [server.url("/")], durationNanos: 1_500_000_000), mode: .async,
                                              workers: 16, cores: 1)
            let saturated = try #require(report.validity?.reasons.first { $0.code == "agent_saturated" },
                                         "\(report.validity?.reasons.map(\.message) ?? [])")
            #expect(saturated.verdict == .suspect)
            #expect((saturated.value ?? 0) > 90)
        }
    }

    /// A scripted agent that answers pings with a wall clock of 1970 and then goes silent: its clock offset is
    /// suspect, and it is lost (invalid).
    @Test func aLostAgentAndAFarClockAreNamed() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let outcome = try await SilentAgent.with { silent in
            try await LiveAgents.with(count: 1, policy: AgentPolicy(allowedRoots: [root])) { addresses in
                try await RemoteAgentLink.with(addresses: addresses + [silent]) { links in
                    try await CoordinatorSession.with(links: links, configuration: DistributedTests.coordinator(nil)) { session throws(LoadgenError) in
                        _ = try await session.connect()
                        return try await session.run(DistributedTests.writeRequest(root, files: 2000), observer: NullObserver(), recorder: nil)
                    }
                }
            }
        }
        let reasons = Self.reasons(outcome.report)
        #expect(reasons["agent_lost"] == .invalid, "\(reasons)")
        #expect(reasons["clock_offset"] == .suspect, "\(reasons)")
        #expect(outcome.report.validity?.reasons.first { $0.code == "clock_offset" }?.agent == "silent")
    }

    /// The verdict is kept: the store's report has it, history lists it, and a not-valid side makes compare's
    /// --fail-if-slower exit 2 (cannot judge).
    @Test func theVerdictIsStoredListedAndStopsAJudgment() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let env = ["LOADGEN_DB": dir + "/db.sqlite"]
        try await TestHTTPServer.with { server in
            let good = try await TestSupport.run(["coordinate", "--target", server.url("/"), "--rate", "1000", "--duration", "1500ms",
                                                  "--mode", "threads", "--json"], environment: env)
            #expect(good.status == 0, "\(good.stderr)")
            let short = try await TestSupport.run(["coordinate", "--target", server.url("/"), "--requests", "20", "--mode", "threads", "--json"], environment: env)
            #expect(short.status == 0)
            #expect(short.stdout.contains(#""validity":{"reasons":[{"code":"few_samples""#), "\(short.stdout)")
        }
        let shown = try await TestSupport.run(["history", "show", "last", "--json"], environment: env)
        #expect(shown.stdout.contains(#""verdict":"suspect""#))
        let listed = try await TestSupport.run(["history", "--json"], environment: env)
        let runs = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as! [[String: Any]]
        #expect(runs.map { $0["validity"] as? String } == ["suspect", "valid"])
        let judged = try await TestSupport.run(["history", "compare", "last~1", "last", "--fail-if-slower", "50"], environment: env)
        #expect(judged.status == 2, "\(judged.stdout) \(judged.stderr)")
        #expect(judged.stderr.contains("cannot judge"), "\(judged.stderr)")
    }
}

/// `--runs N` and `--find-max` through the binary: their JSON lines, the store's sets, and compare on sets.
@Suite(.timeLimit(.minutes(2)))
struct SetsAndSearchTests {
    @Test func aSetInterleavesItsModesAndSumsThemUp() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let env = ["LOADGEN_DB": dir + "/db.sqlite"]
        let out = try await TestSupport.run(["coordinate", "--target", dir, "--files", "300", "--mode", "threads,processes",
                                             "--runs", "3", "--json"], environment: env)
        #expect(out.status == 0, "\(out.stderr)")
        let lines = out.stdout.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        #expect(lines.count == 7)
        // Interleaved: threads, processes, threads, processes, ...
        #expect(lines.prefix(6).map { $0["mode"] as? String } == ["threads", "processes", "threads", "processes", "threads", "processes"])
        let set = try #require(lines.last)
        #expect(set["kind"] as? String == "set" && set["rounds"] as? Int == 3)
        let setID = try #require(set["set_id"] as? String)
        #expect(lines.prefix(6).allSatisfy { $0["set_id"] as? String == setID })
        let modes = try #require(set["modes"] as? [[String: Any]])
        let threads = try #require(modes.first { $0["mode"] as? String == "threads" })
        let rates = lines.prefix(6).filter { $0["mode"] as? String == "threads" }.map { $0["ops_per_s"] as! Double }.sorted()
        let spread = threads["ops_per_s"] as! [String: Double]
        #expect(spread["median"] == rates[1] && spread["min"] == rates[0] && spread["max"] == rates[2])
        // Stored as a set; compare of two sets judges each mode with its uncertainty.
        let sets = try await TestSupport.run(["history", "sets", "--json"], environment: env)
        #expect(sets.stdout.contains(setID))
        let again = try await TestSupport.run(["coordinate", "--target", dir, "--files", "300", "--mode", "threads,processes",
                                               "--runs", "3", "--json"], environment: env)
        #expect(again.status == 0)
        let compared = try await TestSupport.run(["history", "compare", setID, "set-", "--json"], environment: env)
        // "set-" is ambiguous between the two sets: one sentence.
        #expect(compared.status == 2 && compared.stderr.contains("matches several sets"), "\(compared.stderr)")
        let secondID = try #require(again.stdout.split(separator: "\n").last.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }?["set_id"] as? String)
        let judged = try await TestSupport.run(["history", "compare", setID, secondID, "--json"], environment: env)
        #expect(judged.status == 0, "\(judged.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(judged.stdout.utf8)) as? [String: Any])
        let judgments = try #require(object["modes"] as? [[String: Any]])
        #expect(judgments.count == 2)
        #expect((judgments[0]["judgment"] as? [String: Any])?["method"] as? String == "hodges-lehmann")
    }

    /// A search whose service level nothing can meet halves its rate from the start down to the floor, prints a
    /// line per step and a summary, keeps every step, and exits 1.
    @Test func aSearchPrintsItsStepsAndIsKept() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let env = ["LOADGEN_DB": dir + "/db.sqlite"]
        let out = try await TestSupport.run(["coordinate", "--target", dir, "--find-max", "--slo", "p99=1us", "--rate", "6",
                                             "--step-duration", "1s", "--mode", "threads", "--json"], environment: env)
        #expect(out.status == 1, "\(out.stderr)")
        let lines = out.stdout.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        let steps = lines.filter { $0["kind"] as? String == "step" }
        #expect(steps.map { $0["rate"] as? Double } == [6, 3, 1.5])
        #expect(steps.allSatisfy { $0["outcome"] as? String == "fail" })
        let summary = try #require(lines.last)
        #expect(summary["kind"] as? String == "search" && summary["max_ops_per_s"] == nil)
        #expect((summary["steps"] as? [Any])?.count == 3)
        let listed = try await TestSupport.run(["history", "sets", "--json"], environment: env)
        let sets = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as! [[String: Any]]
        #expect(sets.first?["kind"] as? String == "search" && (sets.first?["runs"] as? [String])?.count == 3)
    }

    @Test(arguments: [
        (["--find-max"], "give --slo"),
        (["--slo", "p99=5ms"], "give --find-max"),
        (["--find-max", "--slo", "p99=5ms", "--mode", "threads,processes"], "searches in one mode"),
        (["--find-max", "--slo", "p99=5ms", "--mode", "threads", "--files", "10"], "--files conflicts"),
        (["--find-max", "--slo", "p99=5ms", "--mode", "threads", "--runs", "3"], "give one"),
        (["--find-max", "--slo", "p99=5ms", "--mode", "threads", "--step-duration", "10ms"], "1s or more"),
        (["--runs", "0"], "--runs must be"),
        (["--rate", "100", "--mode", "async"], "--rate paces"),
    ])
    func refusals(arguments: [String], words: String) async throws {
        try await TestSupport.expectWriteRefusal(arguments, words: words)
    }
}
