import LoadgenCore

/// `--find-max`: the highest rate the agents, together, can hold the target to within a service level. Each step is
/// one stored run at a rate split evenly across the agents, judged on the merged percentile, the error share and
/// whether every agent kept to its schedule (``CapacitySearch`` chooses the next rate).
public struct SearchPlan: Sendable {
    public var workload: WorkloadKind
    public var mode: ExecutionMode
    public var slo: ServiceLevel
    /// The first step's rate, for all agents together.
    public var startRate: Double
    public var setID: String
    public var label: String?
    public var maxSteps: Int
    /// The request of a step: `rate` per agent, under a run id.
    public var makeRequest: @Sendable (_ ratePerAgent: Double, _ runID: String) -> RunRequest

    public init(workload: WorkloadKind, mode: ExecutionMode, slo: ServiceLevel, startRate: Double, setID: String,
                label: String?, maxSteps: Int = 40,
                makeRequest: @escaping @Sendable (_ ratePerAgent: Double, _ runID: String) -> RunRequest) {
        self.workload = workload
        self.mode = mode
        self.slo = slo
        self.startRate = startRate
        self.setID = setID
        self.label = label
        self.maxSteps = maxSteps
        self.makeRequest = makeRequest
    }

    /// How a finished step went against the service level.
    public func judge(_ report: RunReport, rate: Double, step: Int) -> SearchSummary.Step {
        let percentileUs: Double
        switch self.slo.percentile {
        case 50: percentileUs = report.latencyUs.p50
        case 90: percentileUs = report.latencyUs.p90
        case 99.9: percentileUs = report.latencyUs.p999
        default: percentileUs = report.latencyUs.p99
        }
        let attempts = report.ops + report.errors
        let errorsPct = attempts == 0 ? 0 : Double(report.errors) / Double(attempts) * 100
        let behind = report.validity?.reasons.filter { $0.code == "generator_behind" } ?? []
        let sentPct = behind.compactMap(\.value).min() ?? (report.validity == nil ? nil : 100)
        let bound = Double(self.slo.latencyNanos) / 1000
        let p = self.slo.percentile == self.slo.percentile.rounded() ? "\(Int(self.slo.percentile))" : "\(self.slo.percentile)"
        var outcome = CapacitySearch.Outcome.pass
        var reason: String?
        if let first = behind.first {
            outcome = .invalid
            reason = first.message
        } else if report.status != .completed {
            outcome = .fail
            reason = "the run ended \(report.status.rawValue)\(report.message.map { ": \($0)" } ?? "")"
        } else if report.ops == 0 {
            outcome = .fail
            reason = "no operation succeeded"
        } else if percentileUs > bound {
            outcome = .fail
            reason = "p\(p) \(Self.latency(percentileUs)) is over \(Self.latency(bound))"
        } else if errorsPct > self.slo.errorsPct {
            outcome = .fail
            reason = "\(errorsPct.formatted(decimals: 2))% of operations failed, over \(self.slo.errorsPct.formatted(decimals: 2))%"
        }
        return SearchSummary.Step(step: step, rate: rate, outcome: outcome, runID: report.runID, opsPerS: report.opsPerS,
                                  latencyUs: percentileUs, errorsPct: errorsPct, sentPct: sentPct, reason: reason,
                                  validity: report.validity?.verdict)
    }

    static func latency(_ us: Double) -> String {
        us >= 1000 ? "\((us / 1000).formatted(decimals: 2))ms" : "\(us.formatted(decimals: 1))us"
    }
}

extension CoordinatorSession {
    /// Connects, then runs the search's steps one after another on every agent until it has its answer, Ctrl-C, or
    /// a step is refused (exit 2 before the first step; after it, the search ends with what it found).
    public func search(_ plan: SearchPlan, makeRunID: @Sendable () -> String, observer: any RunObserver,
                       recorder: (any RunRecorder)?) async throws(LoadgenError) -> (SearchSummary, [RunOutcome]) {
        let agents = try await self.connect()
        observer.connected(agents)
        // The agents' --max-rate bounds fetch rates; the search does not ask for more.
        let cap = plan.workload == .fetch ? agents.map(\.policy.maxRate).reduce(0, +) : nil
        var search = CapacitySearch(startRate: min(plan.startRate, cap ?? plan.startRate), maxSteps: plan.maxSteps, maxRate: cap)
        try await recorder?.setStarted(id: plan.setID, kind: "search", label: plan.label, workload: plan.workload,
                                       modes: [plan.mode],
                                       requestJSON: "{\"slo\":\"\(plan.slo.description)\",\"start_rate\":\(plan.startRate)}")
        var steps: [SearchSummary.Step] = []
        var outcomes: [RunOutcome] = []
        while let rate = search.next(), !self.interrupted {
            let live = agents.indices.filter { self.isAlive($0) }.count
            guard live > 0 else { break }
            var request = plan.makeRequest(rate / Double(live), makeRunID())
            request.setID = plan.setID
            let outcome: RunOutcome
            do throws(LoadgenError) {
                if steps.isEmpty { try RunPlan.check(request, agents: agents) }
                outcome = try await self.run(request, observer: observer, recorder: recorder)
            } catch {
                if steps.isEmpty { throw error }
                observer.note("The search stopped: a step at \(CapacitySearch.rate(rate))/s was refused: \(error.message)")
                break
            }
            outcomes.append(outcome)
            let step = plan.judge(outcome.report, rate: rate, step: steps.count + 1)
            steps.append(step)
            search.record(CapacitySearch.Step(rate: rate, outcome: step.outcome, runID: step.runID, reason: step.reason))
            observer.searchStep(step)
        }
        let summary = SearchSummary(setID: plan.setID, search: search, slo: plan.slo, steps: steps)
        observer.searchFinished(summary)
        if let recorder {
            do throws(LoadgenError) {
                try await recorder.setEnded(id: plan.setID, resultJSON: summary.jsonLine())
            } catch {
                observer.note("The search's result could not be stored: \(error.message)")
            }
        }
        return (summary, outcomes)
    }
}
