import LoadgenAgent
import LoadgenCore
import LoadgenCoordinator
import Synchronization

/// The coordinator's side of the page: every agent's intervals as merged, agents connected and lost, the run's
/// phase and status.
public struct CoordinatorMetrics: RunObserver {
    public let exporter: MetricsExporter

    public init(exporter: MetricsExporter) {
        self.exporter = exporter
    }

    public func connected(_ agents: [ConnectedAgent]) { self.exporter.agentsConnected(agents.count) }

    public func phaseStarted(_ request: RunRequest, phase: Phase, agents: [ConnectedAgent]) {
        if self.exporter.currentRunID != request.runID {
            self.exporter.runStarted(runID: request.runID, workload: request.workload, mode: request.mode)
        }
        self.exporter.agentsConnected(agents.count)
        self.exporter.phaseStarted(runID: request.runID, phase: phase)
    }

    public func progress(_ snapshot: ProgressSnapshot) {}

    public func agentLost(_ agent: ConnectedAgent, message: String) { self.exporter.agentLost() }

    public func note(_ message: String) {}

    public func runFinished(_ outcome: RunOutcome) {
        self.exporter.runEnded(runID: outcome.report.runID, status: outcome.report.status)
    }

    public func interval(_ interval: WireMessage.Interval, from agent: ConnectedAgent) {
        self.exporter.record(interval, agent: agent.agentID)
    }
}

/// An agent's side of the page: what this agent measured in the run it serves.
public final class AgentMetrics: AgentRunObserver {
    public let exporter: MetricsExporter
    /// The agent's id, known for sure once it listens (`host-PORT` on a port picked at bind).
    public let id: Mutex<String>

    public init(exporter: MetricsExporter, agentID: String) {
        self.exporter = exporter
        self.id = Mutex(agentID)
    }

    public var agentID: String { self.id.withLock { $0 } }

    public func runStarted(_ request: RunRequest) {
        self.exporter.runStarted(runID: request.runID, workload: request.workload, mode: request.mode)
        self.exporter.agentsConnected(1)
    }

    public func runEmitted(_ message: WireMessage, request: RunRequest) {
        switch message {
        case .interval(let interval):
            self.exporter.phaseStarted(runID: request.runID, phase: interval.phase)
            self.exporter.record(interval, agent: self.agentID)
        case .phaseDone(let done) where done.status != .completed:
            self.exporter.runEnded(runID: request.runID, status: done.status)
        case .finished:
            if self.exporter.status(runID: request.runID) == .running {
                self.exporter.runEnded(runID: request.runID, status: .completed)
            }
        default:
            break
        }
    }

    public func runClosed(_ request: RunRequest) {
        self.exporter.agentsConnected(0)
        if self.exporter.status(runID: request.runID) == .running {
            self.exporter.runEnded(runID: request.runID, status: .aborted)
        }
    }
}
