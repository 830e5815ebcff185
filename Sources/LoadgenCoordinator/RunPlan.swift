import LoadgenAgent
import LoadgenCore
import LoadgenWorkloads

/// What one `coordinate` invocation runs: the same workload once per mode, in order, compared at the end.
public struct RunPlan: Sendable {
    public var workload: WorkloadKind
    public var modes: [ExecutionMode]
    /// Modes included by `all` rather than named: one an agent cannot run (async writes without io_uring) is
    /// skipped with a note instead of refusing the whole command.
    public var impliedModes: Set<ExecutionMode>
    /// The request of one mode's run, under a run id.
    public var makeRequest: @Sendable (ExecutionMode, String) -> RunRequest
    /// `--runs N`: every mode runs N times, the modes interleaved in each round (so drift spreads evenly), all as
    /// one set.
    public var rounds: Int
    /// The set the runs belong to (with more than one round).
    public var setID: String?

    public init(workload: WorkloadKind, modes: [ExecutionMode], impliedModes: Set<ExecutionMode> = [], rounds: Int = 1,
                setID: String? = nil, makeRequest: @escaping @Sendable (ExecutionMode, String) -> RunRequest) {
        self.workload = workload
        self.modes = modes
        self.impliedModes = impliedModes
        self.rounds = rounds
        self.setID = setID
        self.makeRequest = makeRequest
    }

    /// One run of the plan, in `mode`: a part of the plan's set (if any), which the caller starts and ends.
    public func single(_ mode: ExecutionMode) -> RunPlan {
        var plan = RunPlan(workload: self.workload, modes: [mode], impliedModes: self.impliedModes.intersection([mode]),
                           rounds: 1, setID: self.setID, makeRequest: self.makeRequest)
        plan.announcesSet = false
        return plan
    }

    /// Whether running the plan starts and ends its set (false for a part of a set run by the caller).
    public var announcesSet = true

    /// The runs in order: round by round, each round every mode once.
    public var schedule: [ExecutionMode] {
        (0..<max(1, self.rounds)).flatMap { _ in self.modes }
    }

    /// The request of a run of the plan, tagged with its set.
    func request(_ mode: ExecutionMode, runID: String) -> RunRequest {
        var request = self.makeRequest(mode, runID)
        request.setID = self.setID
        return request
    }

    /// Every planned mode against every agent's policy and open-file limit, before the first run, so a comparison
    /// is refused whole rather than stopped half-way.
    public func preflight(_ agents: [ConnectedAgent]) throws(LoadgenError) {
        for mode in self.modes { try Self.check(self.request(mode, runID: "check"), agents: agents) }
    }

    /// One request against every agent's policy and open-file limit.
    public static func check(_ request: RunRequest, agents: [ConnectedAgent]) throws(LoadgenError) {
        for agent in agents {
            let policy = AgentPolicy(allowedRoots: agent.policy.allowedRoots, maxFiles: agent.policy.maxFiles,
                                     maxBytes: agent.policy.maxBytes, maxWorkers: agent.policy.maxWorkers,
                                     maxDurationNanos: agent.policy.maxDurationNanos, maxRate: agent.policy.maxRate)
            do throws(LoadgenError) {
                try policy.check(request)
            } catch {
                throw agents.count == 1 && agent.address == "embedded"
                    ? error : LoadgenError(error.code, "Agent \(agent.agentID) would refuse the run: \(error.message)")
            }
            guard let limit = agent.openFileLimit else { continue }
            try OpenFileBudget.check(request, agentID: agent.agentID, cores: agent.cores, limit: limit)
        }
    }

    /// The command's exit status for these outcomes: 0 when every run completed and was stored (when a store was
    /// asked for), 1 otherwise. (2, a refusal before anything started, is thrown rather than returned.)
    public static func exitStatus(_ outcomes: [RunOutcome]) -> Int32 {
        outcomes.contains { $0.report.status != .completed || $0.storeFailed } ? 1 : 0
    }
}

extension CoordinatorSession {
    /// Connects, checks the plan against every agent, then runs each mode in turn until done or Ctrl-C. Each run
    /// starts only when every agent has closed the last one. An implied mode an agent cannot run is skipped with
    /// a note; any other refusal ends the command (exit 2).
    public func run(_ plan: RunPlan, makeRunID: @Sendable () -> String, observer: any RunObserver,
                    recorder: (any RunRecorder)?) async throws(LoadgenError) -> [RunOutcome] {
        let agents = try await self.connect()
        try plan.preflight(agents)
        observer.connected(agents)
        if let setID = plan.setID, plan.announcesSet, let recorder {
            try await recorder.setStarted(id: setID, kind: "repeat", label: plan.request(plan.modes[0], runID: "set").label,
                                          workload: plan.workload, modes: plan.modes,
                                          requestJSON: "{\"rounds\":\(plan.rounds)}")
        }
        var outcomes: [RunOutcome] = []
        var skipped: Set<ExecutionMode> = []
        for mode in plan.schedule where !self.interrupted && !skipped.contains(mode) {
            let request = plan.request(mode, runID: makeRunID())
            let outcome: RunOutcome
            do throws(LoadgenError) {
                outcome = try await self.run(request, observer: observer, recorder: recorder)
            } catch where plan.impliedModes.contains(mode) && error.code == .unsupported {
                observer.note("Skipped the \(mode.rawValue) mode: \(error.message)")
                skipped.insert(mode)
                continue
            }
            observer.runFinished(outcome)
            outcomes.append(outcome)
        }
        if let setID = plan.setID, plan.announcesSet {
            let summary = SetSummary(setID: setID, rounds: plan.rounds, reports: outcomes.map(\.report))
            observer.setFinished(summary)
            if let recorder {
                do throws(LoadgenError) {
                    try await recorder.setEnded(id: setID, resultJSON: summary.jsonLine())
                } catch {
                    observer.note("The set's summary could not be stored: \(error.message)")
                }
            }
        }
        return outcomes
    }
}
