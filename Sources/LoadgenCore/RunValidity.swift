/// Whether a run measured what it claims: a verdict and its reasons, each measured from what the agents reported,
/// never guessed. Every run's report carries one; `compare` will not judge a run that is not valid, and a capacity
/// search never passes a step whose generator fell behind.
///
/// | reason | verdict | when |
/// |---|---|---|
/// | `not_completed` | invalid | the run failed or was aborted |
/// | `agent_lost` | invalid | an agent was lost: the load it should have made is missing |
/// | `generator_behind` | invalid | open model: an agent started under 99% of its planned operations by the deadline |
/// | `schedule_lag` | suspect | open model: operations started late, lag p99 above 10 ms |
/// | `agent_saturated` | suspect | an agent's process (and its workers) used over 90% of its cores in the phase (writes: user time) |
/// | `errors` | suspect | over 1% of operations failed |
/// | `clock_offset` | suspect | an agent's wall clock is over 250 ms from the coordinator's |
/// | `few_samples` | suspect | p99.9 from under 1,000 operations (p99 from under 100) |
public struct RunValidity: Codable, Sendable, Hashable {
    public enum Verdict: String, Codable, Sendable, Hashable, Comparable {
        case valid
        case suspect
        case invalid

        public static func < (a: Verdict, b: Verdict) -> Bool {
            let order: [Verdict] = [.valid, .suspect, .invalid]
            return order.firstIndex(of: a)! < order.firstIndex(of: b)!
        }
    }

    public struct Reason: Codable, Sendable, Hashable {
        /// A stable name: not_completed, agent_lost, generator_behind, schedule_lag, agent_saturated, errors,
        /// clock_offset, few_samples.
        public var code: String
        public var verdict: Verdict
        /// The reason as a sentence, with the measured figure.
        public var message: String
        /// The agent it concerns, when one.
        public var agent: String?
        /// The measured figure and the bound it crossed, in the unit the message names.
        public var value: Double?
        public var limit: Double?

        public init(code: String, verdict: Verdict, message: String, agent: String? = nil, value: Double? = nil, limit: Double? = nil) {
            self.code = code
            self.verdict = verdict
            self.message = message
            self.agent = agent
            self.value = value
            self.limit = limit
        }
    }

    public var verdict: Verdict
    public var reasons: [Reason]

    public init(reasons: [Reason]) {
        self.reasons = reasons
        self.verdict = reasons.map(\.verdict).max() ?? .valid
    }

    /// The bounds the reasons are judged against.
    public enum Bounds {
        public static let sentFraction = 0.99
        public static let lagP99Nanos: UInt64 = 10_000_000
        public static let cpuFraction = 0.9
        public static let errorFraction = 0.01
        public static let clockOffsetNanos: Int64 = 250_000_000
        public static let samplesForP999: UInt64 = 1000
        public static let samplesForP99: UInt64 = 100
    }

    /// Judges a settled run from its aggregate (the main phase: a write run's create phase, a fetch run's requests).
    public static func judge(_ aggregate: RunAggregate) -> RunValidity {
        var reasons: [Reason] = []
        let request = aggregate.request
        let unit = request.workload == .write ? "files" : "requests"
        switch aggregate.status {
        case .failed, .aborted:
            reasons.append(Reason(code: "not_completed", verdict: .invalid,
                                  message: "The run \(aggregate.status == .failed ? "failed" : "was aborted"): its figures cover only part of the work."))
        default:
            break
        }
        for agent in aggregate.agents where agent.status == .lost {
            reasons.append(Reason(code: "agent_lost", verdict: .invalid, message: "Agent \(agent.agentID) was lost part-way: the load it should have made is missing.",
                                  agent: agent.agentID))
        }
        let planned = request.plannedOpsPerAgent
        var lag = LatencyCounts()
        for (index, agent) in aggregate.agents.enumerated() {
            let state = agent.phase(.main)
            let attempted = state.totals.ops &+ state.totals.errors.total
            if let planned, planned > 0, agent.status != .lost {
                // What was not started by the deadline is never started (the run ends there).
                let fraction = Double(attempted) / Double(planned)
                if fraction < Bounds.sentFraction {
                    reasons.append(Reason(
                        code: "generator_behind", verdict: .invalid,
                        message: "Agent \(agent.agentID) started \(Self.percent(fraction)) of its \(planned) planned \(unit) in time: the generator fell behind, so the load asked for was not applied (add workers or agents).",
                        agent: agent.agentID, value: fraction * 100, limit: Bounds.sentFraction * 100))
                }
            }
            lag.add(state.lag)
            let duration = aggregate.durationNanos(agent: index, phase: .main)
            // The generator's own CPU: all of it for fetches; for writes the user time only, since the system time
            // of the workers' file calls is the file system doing the work measured.
            let own = request.workload == .write ? state.totals.cpu.userNanos : state.totals.cpu.totalNanos
            if agent.cores > 0, duration > 0, own > 0 {
                let busy = Double(own) / (Double(duration) * Double(agent.cores))
                if busy > Bounds.cpuFraction {
                    let what = request.workload == .write ? "outside the file system (user time)" : ""
                    reasons.append(Reason(
                        code: "agent_saturated", verdict: .suspect,
                        message: "Agent \(agent.agentID) was busy \(Self.percent(busy)) of its \(agent.cores) cores\(what.isEmpty ? "" : " " + what): the generator may have limited the rate or added to the latency.",
                        agent: agent.agentID, value: busy * 100, limit: Bounds.cpuFraction * 100))
                }
            }
            if abs(agent.clockOffsetNanos) > Bounds.clockOffsetNanos {
                reasons.append(Reason(
                    code: "clock_offset", verdict: .suspect,
                    message: "Agent \(agent.agentID)'s clock is \(DurationText.format(nanos: UInt64(abs(agent.clockOffsetNanos)))) from the coordinator's: its timestamps do not line up with the others' (durations, from monotonic clocks, hold).",
                    agent: agent.agentID, value: Double(agent.clockOffsetNanos) / 1e6, limit: Double(Bounds.clockOffsetNanos) / 1e6))
            }
        }
        if !lag.isEmpty {
            let p99 = lag.histogram().valueAtPercentile(99)
            if p99 > Bounds.lagP99Nanos {
                reasons.append(Reason(
                    code: "schedule_lag", verdict: .suspect,
                    message: "Operations started late against their schedule: lag p99 \(DurationText.format(nanos: p99)) (latency counts from each one's due time, so the percentiles hold, but the generator was strained).",
                    value: Double(p99) / 1e6, limit: Double(Bounds.lagP99Nanos) / 1e6))
            }
        }
        let main = aggregate.clusterTally(.main)
        let attempts = main.ops &+ main.errors.total
        if attempts > 0 {
            let share = Double(main.errors.total) / Double(attempts)
            if share > Bounds.errorFraction {
                reasons.append(Reason(code: "errors", verdict: .suspect,
                                      message: "\(Self.percent(share)) of the \(unit) failed (\(main.errors.total) of \(attempts)): the figures describe failures as much as the target.",
                                      value: share * 100, limit: Bounds.errorFraction * 100))
            }
        }
        if main.ops < Bounds.samplesForP999 {
            let what = main.ops < Bounds.samplesForP99 ? "p99 and p99.9 are" : "p99.9 is"
            reasons.append(Reason(code: "few_samples", verdict: .suspect,
                                  message: "\(what) read from \(main.ops) operations: under \(main.ops < Bounds.samplesForP99 ? Bounds.samplesForP99 : Bounds.samplesForP999) such a percentile is one sample's value, not a tail.",
                                  value: Double(main.ops), limit: Double(main.ops < Bounds.samplesForP99 ? Bounds.samplesForP99 : Bounds.samplesForP999)))
        }
        return RunValidity(reasons: reasons)
    }

    static func percent(_ fraction: Double) -> String {
        "\((fraction * 100).formatted(decimals: fraction < 0.1 ? 2 : 1))%"
    }
}
