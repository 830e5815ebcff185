/// A set of runs (`--runs N`) summed up per mode: the median, smallest and largest throughput and p99, and which
/// runs were not valid. The last line of `--json` for a set, and the set's result in the store.
public struct SetSummary: Codable, Sendable, Hashable {
    public struct Spread: Codable, Sendable, Hashable {
        public var median: Double
        public var min: Double
        public var max: Double

        public init?(_ values: [Double]) {
            guard !values.isEmpty else { return nil }
            let sorted = values.sorted()
            self.median = Statistics.median(sorted)
            self.min = sorted.first!
            self.max = sorted.last!
        }
    }

    public struct ModeFigures: Codable, Sendable, Hashable {
        public var mode: ExecutionMode
        /// Every run of the mode (ids), in the order they ran.
        public var runs: [String]
        /// Over the completed runs.
        public var opsPerS: Spread?
        public var p99Us: Spread?
        /// Runs whose validity is not `valid` (they are in the figures; compare says so).
        public var notValid: [String]
    }

    public var kind = "set"
    public var setID: String
    /// Rounds: each mode ran this many times, the modes interleaved in each round.
    public var rounds: Int
    public var modes: [ModeFigures]

    public init(setID: String, rounds: Int, reports: [RunReport]) {
        self.setID = setID
        self.rounds = rounds
        var order: [ExecutionMode] = []
        for r in reports where !order.contains(r.mode) { order.append(r.mode) }
        self.modes = order.map { mode in
            let mine = reports.filter { $0.mode == mode }
            let completed = mine.filter { $0.status == .completed }
            return ModeFigures(mode: mode, runs: mine.map(\.runID), opsPerS: Spread(completed.map(\.opsPerS)),
                               p99Us: Spread(completed.map(\.latencyUs.p99)),
                               notValid: mine.filter { ($0.validity?.verdict ?? .valid) != .valid }.map(\.runID))
        }
    }
}

/// What a capacity search found: the last line of `--json` for `--find-max`, and the search's result in the store.
public struct SearchSummary: Codable, Sendable, Hashable {
    public struct Step: Codable, Sendable, Hashable {
        public var kind = "step"
        public var step: Int
        /// The rate asked of all agents together (each got its share).
        public var rate: Double
        public var outcome: CapacitySearch.Outcome
        public var runID: String
        public var opsPerS: Double
        /// The percentile the service level bounds, and the share of operations that failed.
        public var latencyUs: Double
        public var errorsPct: Double
        /// The least share of its planned operations any agent started in time.
        public var sentPct: Double?
        public var reason: String?
        public var validity: RunValidity.Verdict?

        public init(step: Int, rate: Double, outcome: CapacitySearch.Outcome, runID: String, opsPerS: Double,
                    latencyUs: Double, errorsPct: Double, sentPct: Double?, reason: String?, validity: RunValidity.Verdict?) {
            self.step = step
            self.rate = rate
            self.outcome = outcome
            self.runID = runID
            self.opsPerS = opsPerS
            self.latencyUs = latencyUs
            self.errorsPct = errorsPct
            self.sentPct = sentPct
            self.reason = reason
            self.validity = validity
        }
    }

    public var kind = "search"
    public var setID: String
    /// The highest rate that passed (nil: none did).
    public var maxOpsPerS: Double?
    /// The throughput the best run achieved.
    public var achievedOpsPerS: Double?
    public var slo: ServiceLevel
    public var steps: [Step]
    public var bestRunID: String?
    /// What bounded the result: the target (a step broke the service level), the generator (it fell behind), the
    /// agents' --max-rate, or the search's step limit.
    public var limitedBy: String?
    public var conclusion: String

    public init(setID: String, search: CapacitySearch, slo: ServiceLevel, steps: [Step]) {
        self.setID = setID
        self.slo = slo
        self.steps = steps
        self.maxOpsPerS = search.passed?.rate
        self.bestRunID = search.passed?.runID
        self.achievedOpsPerS = steps.first { $0.runID == search.passed?.runID }?.opsPerS
        if let failed = search.failed {
            self.limitedBy = failed.outcome == .invalid ? "generator" : "target"
        } else if let cap = search.maxRate, let best = search.passed?.rate, best >= cap {
            self.limitedBy = "max_rate"
        } else {
            self.limitedBy = search.passed == nil ? nil : "steps"
        }
        self.conclusion = search.conclusion
    }
}

extension Encodable {
    /// The value as one line of JSON, snake_case keys (as `--json` prints).
    public func jsonLine() -> String {
        guard let data = try? FrameCodec.makeEncoder().encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
