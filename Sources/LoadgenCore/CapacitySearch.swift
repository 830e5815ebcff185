import Foundation

/// `--slo p99=50ms[,errors=1%]`: what a step of a capacity search must stay within.
public struct ServiceLevel: Codable, Sendable, Hashable {
    /// The percentile judged (50, 90, 99 or 99.9) and its bound.
    public var percentile: Double
    public var latencyNanos: UInt64
    /// The largest share of failed operations allowed, in percent.
    public var errorsPct: Double

    public init(percentile: Double, latencyNanos: UInt64, errorsPct: Double = 1) {
        self.percentile = percentile
        self.latencyNanos = latencyNanos
        self.errorsPct = errorsPct
    }

    /// `p99=50ms`, `p99.9=200ms,errors=0.1%`.
    public static func parse(_ text: String) throws(LoadgenError) -> ServiceLevel {
        var percentile: Double?
        var latency: UInt64?
        var errors = 1.0
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2, !pair[1].isEmpty else {
                throw .usage("--slo '\(text)' is not a list such as p99=50ms,errors=1%: '\(part)' has no value.")
            }
            let (key, value) = (pair[0].lowercased(), pair[1])
            if key == "errors" {
                guard value.hasSuffix("%"), let pct = Double(value.dropLast()), pct >= 0, pct <= 100 else {
                    throw .usage("--slo errors='\(value)' is not a percentage such as 1% or 0.1%.")
                }
                errors = pct
            } else if key.hasPrefix("p"), let p = Double(key.dropFirst()), [50.0, 90, 99, 99.9].contains(p) {
                guard percentile == nil else { throw .usage("--slo '\(text)' names a percentile twice; give one.") }
                guard let nanos = DurationText.parseNanos(value), nanos > 0 else {
                    throw .usage("--slo \(key)='\(value)' is not a duration such as 50ms or 1s.")
                }
                percentile = p
                latency = nanos
            } else {
                throw .usage("--slo '\(text)': '\(key)' is not p50, p90, p99, p99.9 or errors.")
            }
        }
        guard let percentile, let latency else {
            throw .usage("--slo '\(text)' bounds no latency percentile: give one such as p99=50ms.")
        }
        return ServiceLevel(percentile: percentile, latencyNanos: latency, errorsPct: errors)
    }

    public var description: String {
        let p = self.percentile == self.percentile.rounded() ? String(Int(self.percentile)) : String(self.percentile)
        return "p\(p)=\(DurationText.format(nanos: self.latencyNanos)),errors=\(self.errorsPct.formatted(decimals: self.errorsPct < 1 ? 2 : 1))%"
    }
}

/// The search behind `--find-max`: the highest rate a target sustains within a service level.
///
/// Pure: the caller runs each step (a stored run at ``next()``'s rate) and ``record(_:)``s how it went. The rate
/// doubles from the start while steps pass (or halves while they fail, when the start was too high), then bisects
/// between the highest pass and the lowest failure until they are within the tolerance of each other.
///
///     start ─pass─▶ 2× ─pass─▶ 4× ─fail─▶ 3× ─pass─▶ 3.5× ─fail─▶ ... until (fail − pass) ≤ tolerance · pass
///
/// A step whose generator fell behind (an agent sent under 99% of its planned operations) is not a pass, whatever
/// its latency: it says the load was not applied, so it bounds the search like a failure and the result says that
/// above it the generator, not the target, was the limit.
public struct CapacitySearch: Sendable {
    public enum Outcome: String, Codable, Sendable {
        case pass
        /// The service level was broken (latency or errors), or the run did not complete.
        case fail
        /// The generator fell behind: the planned load was not applied.
        case invalid
    }

    public struct Step: Codable, Sendable, Hashable {
        public var rate: Double
        public var outcome: Outcome
        public var runID: String?
        /// Why it did not pass, as a sentence.
        public var reason: String?

        public init(rate: Double, outcome: Outcome, runID: String? = nil, reason: String? = nil) {
            self.rate = rate
            self.outcome = outcome
            self.runID = runID
            self.reason = reason
        }
    }

    public let startRate: Double
    public let tolerance: Double
    public let maxSteps: Int
    /// The most the agents allow (their --max-rate summed), if known.
    public let maxRate: Double?
    public let minRate: Double
    public private(set) var steps: [Step] = []
    /// The highest rate that passed, and the lowest that did not.
    public private(set) var passed: Step?
    public private(set) var failed: Step?

    public init(startRate: Double, tolerance: Double = 0.05, maxSteps: Int = 40, maxRate: Double? = nil, minRate: Double = 1) {
        self.startRate = startRate
        self.tolerance = tolerance
        self.maxSteps = maxSteps
        self.maxRate = maxRate
        self.minRate = minRate
    }

    /// The next rate to try; nil when the search is over.
    public func next() -> Double? {
        guard self.steps.count < self.maxSteps else { return nil }
        guard let last = self.steps.last else { return self.startRate }
        switch (self.passed, self.failed) {
        case (let pass?, nil):
            // Growing: double, up to the agents' limit.
            guard let cap = self.maxRate else { return pass.rate * 2 }
            return pass.rate >= cap ? nil : min(pass.rate * 2, cap)
        case (nil, let fail?):
            // The start was too high: halve down to the floor.
            let lower = fail.rate / 2
            return lower < self.minRate || last.rate < self.minRate ? nil : lower
        case (let pass?, let fail?):
            guard fail.rate - pass.rate > self.tolerance * pass.rate else { return nil }
            return (pass.rate + fail.rate) / 2
        case (nil, nil):
            return nil
        }
    }

    public mutating func record(_ step: Step) {
        self.steps.append(step)
        if step.outcome == .pass {
            if step.rate > (self.passed?.rate ?? -1) { self.passed = step }
        } else if step.rate < (self.failed?.rate ?? .infinity) {
            self.failed = step
        }
    }

    /// Whether the generator, not the target, bounded the result: the lowest step that did not pass fell behind.
    public var limitedByGenerator: Bool { self.failed?.outcome == .invalid }

    /// The result in a sentence.
    public var conclusion: String {
        guard let pass = self.passed else {
            return "No rate passed, down to \(self.steps.map(\.rate).min().map { Self.rate($0) } ?? "-") per second: \(self.failed?.reason ?? "every step failed")."
        }
        var text = "The highest rate within the service level is \(Self.rate(pass.rate)) per second (run \(pass.runID ?? "-"))"
        if let fail = self.failed {
            text += "; \(Self.rate(fail.rate)) per second did not pass: \(fail.reason ?? fail.outcome.rawValue)"
            if self.limitedByGenerator { text += " (the generator, not the target, was the limit there: add workers or agents)" }
        } else if let cap = self.maxRate, pass.rate >= cap {
            text += "; that is the agents' --max-rate, so the target may take more"
        } else {
            text += "; the search stopped after \(self.steps.count) steps"
        }
        return text + "."
    }

    public static func rate(_ value: Double) -> String {
        value >= 100 ? String(Int(value.rounded())) : value.formatted(decimals: 1)
    }
}
