import LoadgenCore

/// One agent's answer to `loadgen clean --agents`.
public struct AgentCleanResult: Sendable {
    public var agent: ConnectedAgent
    public var result: Result<CleanReport, LoadgenError>

    public init(agent: ConnectedAgent, result: Result<CleanReport, LoadgenError>) {
        self.agent = agent
        self.result = result
    }
}

extension CoordinatorSession {
    /// Asks every connected agent to clean `target` (within its own allowed roots) and waits for all their answers.
    /// An agent that refuses, goes silent or drops the connection has that as its result; the others still clean.
    public func clean(_ request: WireMessage.Clean) async throws(LoadgenError) -> [AgentCleanResult] {
        var results: [Result<CleanReport, LoadgenError>?] = Array(repeating: nil, count: self.agents.count)
        for agent in self.agents where await !self.send(agent.index, .clean(request)) {
            results[agent.index] = .failure(LoadgenError(.unreachable, "Agent \(agent.agentID) closed the connection before it could clean."))
        }
        while results.contains(where: { $0 == nil }) {
            guard let event = await self.nextEvent() else { throw LoadgenError(.aborted, "The coordinator was stopped.") }
            switch event {
            case .message(let index, .cleaned(let cleaned)) where results[index] == nil:
                if let report = cleaned.report {
                    results[index] = .success(report)
                } else {
                    let refusal = cleaned.refusal ?? .init(code: .protocolViolation, message: "It sent neither a report nor a refusal.")
                    results[index] = .failure(LoadgenError(refusal.code, "Agent \(self.agents[index].agentID) did not clean '\(request.target)': \(refusal.message)"))
                }
            case .message(_, .heartbeat), .message(_, .pong), .message(_, .cleaned):
                continue
            case .message(let index, .failure(let failure)) where results[index] == nil:
                results[index] = .failure(LoadgenError(failure.code, "Agent \(self.agents[index].agentID) ended the connection: \(failure.message)"))
            case .message(let index, let other):
                if results[index] == nil {
                    results[index] = .failure(LoadgenError(.protocolViolation, "Agent \(self.agents[index].agentID) sent \(other.kind.rawValue) instead of cleaned."))
                }
            case .closed(let index) where results[index] == nil:
                results[index] = .failure(LoadgenError(.unreachable, "Agent \(self.agents[index].agentID) closed the connection before it had cleaned."))
            case .closed:
                continue
            case .interrupt:
                throw LoadgenError(.aborted, "Interrupted while the agents were cleaning; what they removed so far is gone.")
            case .tick:
                // Removing many files takes time, but the agent keeps answering heartbeats while it does.
                let now = MonotonicClock.nowNanos()
                for agent in self.agents where results[agent.index] == nil && self.isSilent(agent.index, now: now) {
                    results[agent.index] = .failure(LoadgenError(.unreachable, "Agent \(agent.agentID) was silent for \(DurationText.format(nanos: now &- self.lastHeardAt(agent.index))) while cleaning."))
                    self.drop(agent.index)
                }
            }
        }
        return self.agents.map { AgentCleanResult(agent: $0, result: results[$0.index]!) }
    }
}
