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

    public init(workload: WorkloadKind, modes: [ExecutionMode], impliedModes: Set<ExecutionMode> = [],
                makeRequest: @escaping @Sendable (ExecutionMode, String) -> RunRequest) {
        self.workload = workload
        self.modes = modes
        self.impliedModes = impliedModes
        self.makeRequest = makeRequest
    }

    /// The same plan for one of its modes.
    public func only(_ mode: ExecutionMode) -> RunPlan {
        RunPlan(workload: self.workload, modes: [mode], impliedModes: self.impliedModes.intersection([mode]),
                makeRequest: self.makeRequest)
    }

    /// Every planned mode against every agent's policy and open-file limit, before the first run, so a comparison
    /// is refused whole rather than stopped half-way.
    public func preflight(_ agents: [ConnectedAgent]) throws(LoadgenError) {
        for mode in self.modes {
            let request = self.makeRequest(mode, "check")
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
        var outcomes: [RunOutcome] = []
        for mode in plan.modes where !self.interrupted {
            let request = plan.makeRequest(mode, makeRunID())
            let outcome: RunOutcome
            do throws(LoadgenError) {
                outcome = try await self.run(request, observer: observer, recorder: recorder)
            } catch where plan.impliedModes.contains(mode) && error.code == .unsupported {
                observer.note("Skipped the \(mode.rawValue) mode: \(error.message)")
                continue
            }
            observer.runFinished(outcome)
            outcomes.append(outcome)
        }
        return outcomes
    }
}
