import Foundation

/// Is B really slower than A, or is that noise? A judgment of the ratio of two throughputs with its uncertainty,
/// from repeated runs (sets, `--runs N`) on either side.
///
/// Throughputs are compared on a log scale, so a difference is a ratio and a run twice as fast weighs as much as
/// one twice as slow.
/// - **Two sets** (2 or more runs each): the Hodges–Lehmann estimate of the shift (the median of every pairwise
///   difference of logs) with its exact confidence interval from the Mann–Whitney distribution. Nothing is assumed
///   about the noise's shape (benchmark noise is skewed, with outliers), the false-alarm rate is at most the stated
///   one for any sizes, exactly rather than asymptotically, which is what small sets need (a bootstrap of 5 runs
///   misses its stated coverage). The price: tiny sets cannot reach 95% at all (3 runs against 3: the smallest
///   two-sided p is 0.1), which the judgment says rather than guesses.
/// - **A set and one run**: a prediction interval for one more run of the set (Student's t on the logs), which
///   assumes log-normal noise; with a single run on one side no distribution-free test can reach 95% below 39 runs.
/// - **Two single runs**: the plain ratio; the noise is unknown, so it is never called significant.
public struct ThroughputJudgment: Codable, Sendable, Hashable {
    public enum Method: String, Codable, Sendable {
        case hodgesLehmann = "hodges-lehmann"
        case prediction
        case single
    }

    public var method: Method
    /// B's throughput over A's: the estimate.
    public var ratio: Double
    /// The confidence interval of the ratio (nil for two single runs, and when the sets are too small to reach
    /// the confidence at all).
    public var low: Double?
    public var high: Double?
    public var confidence: Double
    /// The interval excludes 1: B differs from A beyond the noise.
    public var significant: Bool
    public var runsA: Int
    public var runsB: Int

    /// B's change in percent of A's (negative: slower).
    public var changePct: Double { (self.ratio - 1) * 100 }

    /// "B is 23.0% slower (95% CI 18.0–29.0%)", or "no significant difference (...)".
    public var sentence: String {
        let pct = abs(self.changePct).formatted(decimals: 1)
        let direction = self.ratio < 1 ? "slower" : "faster"
        let level = "\(Int((self.confidence * 100).rounded()))%"
        guard self.method != .single else {
            return "B is \(pct)% \(direction) (one run a side: the noise is unknown, so this is not judged; repeat with --runs)"
        }
        guard let low = self.low, let high = self.high, low > 0, high.isFinite else {
            return "no significant difference can be shown at \(level) with \(self.runsA) and \(self.runsB) runs (B is \(pct)% \(direction)); use at least 4 runs a side"
        }
        let lo = (low - 1) * 100, hi = (high - 1) * 100
        func signed(_ v: Double) -> String { (v >= 0 ? "+" : "") + v.formatted(decimals: 1) }
        if self.significant {
            let (a, b) = (min(abs(lo), abs(hi)), max(abs(lo), abs(hi)))
            return "B is \(pct)% \(direction) (\(level) CI \(a.formatted(decimals: 1))–\(b.formatted(decimals: 1))%)"
        }
        return "no significant difference (B is \(pct)% \(direction); \(level) CI \(signed(lo))% to \(signed(hi))%)"
    }

    /// Judges B's throughputs against A's.
    public static func judge(a: [Double], b: [Double], confidence: Double = 0.95) -> ThroughputJudgment {
        let la = a.filter { $0 > 0 }.map { log($0) }, lb = b.filter { $0 > 0 }.map { log($0) }
        guard !la.isEmpty, !lb.isEmpty else {
            return ThroughputJudgment(method: .single, ratio: 0, low: nil, high: nil, confidence: confidence, significant: false,
                                      runsA: a.count, runsB: b.count)
        }
        if la.count == 1, lb.count == 1 {
            return ThroughputJudgment(method: .single, ratio: exp(lb[0] - la[0]), low: nil, high: nil, confidence: confidence,
                                      significant: false, runsA: 1, runsB: 1)
        }
        if la.count == 1 || lb.count == 1 {
            // One more run of the set against the set: its prediction interval on the log scale.
            let set = la.count == 1 ? lb : la
            let single = la.count == 1 ? la[0] : lb[0]
            let n = Double(set.count)
            let mean = set.reduce(0, +) / n
            let sd = (set.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / (n - 1)).squareRoot()
            let half = Statistics.studentTQuantile(1 - (1 - confidence) / 2, degrees: n - 1) * sd * (1 + 1 / n).squareRoot()
            // The shift of B against A: positive when B is faster.
            let shift = la.count == 1 ? mean - single : single - mean
            let low = exp(shift - half), high = exp(shift + half)
            return ThroughputJudgment(method: .prediction, ratio: exp(shift), low: low, high: high, confidence: confidence,
                                      significant: low > 1 || high < 1, runsA: la.count, runsB: lb.count)
        }
        var differences: [Double] = []
        differences.reserveCapacity(la.count * lb.count)
        for x in la { for y in lb { differences.append(y - x) } }
        differences.sort()
        let estimate = Statistics.median(differences)
        let k = Statistics.mannWhitneyCriticalCount(m: la.count, n: lb.count, alpha: 1 - confidence)
        guard k >= 1 else {
            // No interval reaches the confidence with so few runs: none is given.
            return ThroughputJudgment(method: .hodgesLehmann, ratio: exp(estimate), low: nil, high: nil, confidence: confidence,
                                      significant: false, runsA: la.count, runsB: lb.count)
        }
        let low = exp(differences[k - 1]), high = exp(differences[differences.count - k])
        return ThroughputJudgment(method: .hodgesLehmann, ratio: exp(estimate), low: low, high: high, confidence: confidence,
                                  significant: low > 1 || high < 1, runsA: la.count, runsB: lb.count)
    }
}

/// The few distributions the judgments need, computed here (no statistics package is in the mirror).
public enum Statistics {
    public static func median(_ sorted: [Double]) -> Double {
        guard !sorted.isEmpty else { return .nan }
        let n = sorted.count
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }

    /// The largest k such that P(U ≤ k − 1) ≤ alpha/2 under the null hypothesis, for the Mann–Whitney U statistic of
    /// samples of sizes m and n (its exact distribution: the count of arrangements of m x's and n y's with u
    /// (x, y) pairs in order, over C(m+n, m)); 0 when even U = 0 is likelier than alpha/2. [D(k), D(mn−k+1)] of the
    /// sorted pairwise differences is then a confidence interval of the shift at level at least 1 − alpha.
    public static func mannWhitneyCriticalCount(m: Int, n: Int, alpha: Double) -> Int {
        let counts = self.mannWhitneyCounts(m: m, n: n)
        let total = counts.reduce(0, +)
        var cumulative = 0.0
        var k = 0
        for u in counts.indices {
            cumulative += counts[u]
            if cumulative / total <= alpha / 2 { k = u + 1 } else { break }
        }
        return k
    }

    /// Counts of each value of U (0...m·n), U the number of (x, y) pairs with x > y, over all C(m+n, m)
    /// arrangements, by the recurrence c(i, j, u) = c(i, j − 1, u) + c(i − 1, j, u − j) (the largest value is a y,
    /// which beats no x, or an x, which beats all j y's); as doubles, a row of j's kept at a time.
    static func mannWhitneyCounts(m: Int, n: Int) -> [Double] {
        guard m > 0, n > 0 else { return [1] }
        var previous = [[Double]](repeating: [1], count: n + 1)  // i = 0: U = 0 whatever j
        for i in 1...m {
            var current = [[Double]](repeating: [1], count: n + 1)  // j = 0: U = 0
            for j in 1...n {
                var row = [Double](repeating: 0, count: i * j + 1)
                for (u, c) in current[j - 1].enumerated() { row[u] += c }
                for (u, c) in previous[j].enumerated() { row[u + j] += c }
                current[j] = row
            }
            previous = current
        }
        return previous[n]
    }

    /// The quantile `p` of Student's t with `degrees` of freedom (bisection on the CDF).
    public static func studentTQuantile(_ p: Double, degrees: Double) -> Double {
        guard p > 0, p < 1 else { return p <= 0 ? -.infinity : .infinity }
        var low = -1e4, high = 1e4
        for _ in 0..<200 {
            let mid = (low + high) / 2
            if self.studentTCDF(mid, degrees: degrees) < p { low = mid } else { high = mid }
        }
        return (low + high) / 2
    }

    /// P(T ≤ t) for Student's t: through the regularized incomplete beta function.
    public static func studentTCDF(_ t: Double, degrees v: Double) -> Double {
        let x = v / (v + t * t)
        let tail = 0.5 * self.regularizedIncompleteBeta(x, a: v / 2, b: 0.5)
        return t >= 0 ? 1 - tail : tail
    }

    /// I_x(a, b), by its continued fraction (Lentz's method), on the side where it converges quickly.
    static func regularizedIncompleteBeta(_ x: Double, a: Double, b: Double) -> Double {
        if x <= 0 { return 0 }
        if x >= 1 { return 1 }
        let logGammas: Double = lgamma(a + b) - lgamma(a) - lgamma(b)
        let logPowers: Double = a * log(x) + b * log(1 - x)
        let front = exp(logGammas + logPowers)
        if x < (a + 1) / (a + b + 2) { return front * self.betaFraction(x, a: a, b: b) / a }
        return 1 - front * self.betaFraction(1 - x, a: b, b: a) / b
    }

    private static func betaFraction(_ x: Double, a: Double, b: Double) -> Double {
        let tiny = 1e-300
        var c = 1.0, d = 1 - (a + b) * x / (a + 1)
        if abs(d) < tiny { d = tiny }
        d = 1 / d
        var h = d
        for m in 1...300 {
            let m = Double(m)
            var numerator = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
            d = 1 + numerator * d; if abs(d) < tiny { d = tiny }
            c = 1 + numerator / c; if abs(c) < tiny { c = tiny }
            d = 1 / d
            h *= d * c
            numerator = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
            d = 1 + numerator * d; if abs(d) < tiny { d = tiny }
            c = 1 + numerator / c; if abs(c) < tiny { c = tiny }
            d = 1 / d
            let step = d * c
            h *= step
            if abs(step - 1) < 1e-15 { break }
        }
        return h
    }
}

/// `history compare A B` when either side is a set: for each mode both sides ran, B's throughput judged against
/// A's with its uncertainty (``ThroughputJudgment``), and the runs on either side that were not valid.
public struct SetComparison: Codable, Sendable, Hashable {
    public struct ModeJudgment: Codable, Sendable, Hashable {
        public var mode: ExecutionMode
        public var runsA: [String]
        public var runsB: [String]
        public var judgment: ThroughputJudgment
        public var verdict: String
    }

    public var a: String
    public var b: String
    public var modes: [ModeJudgment]
    /// Runs on either side whose validity is not `valid`, with it: `compare` judges only valid runs.
    public var notValid: [String]

    public init(a: String, reportsA: [RunReport], b: String, reportsB: [RunReport], confidence: Double = 0.95) {
        self.a = a
        self.b = b
        var order: [ExecutionMode] = []
        for r in reportsA where !order.contains(r.mode) && reportsB.contains(where: { $0.mode == r.mode }) { order.append(r.mode) }
        self.modes = order.map { mode in
            let x = reportsA.filter { $0.mode == mode && $0.status == .completed }
            let y = reportsB.filter { $0.mode == mode && $0.status == .completed }
            let judgment = ThroughputJudgment.judge(a: x.map(\.opsPerS), b: y.map(\.opsPerS), confidence: confidence)
            return ModeJudgment(mode: mode, runsA: x.map(\.runID), runsB: y.map(\.runID), judgment: judgment,
                                verdict: judgment.sentence)
        }
        self.notValid = (reportsA + reportsB).compactMap { r in
            guard let v = r.validity, v.verdict != .valid else { return nil }
            return "\(r.runID) (\(v.verdict.rawValue): \(v.reasons.first?.message ?? ""))"
        }
    }
}
