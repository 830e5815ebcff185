import LoadgenCore

/// A finished run as the coordinator hands it back.
public struct RunOutcome: Sendable {
    public var report: RunReport
    public var aggregate: RunAggregate
    /// Problems around the run that did not stop it (it could not be stored; files were left behind), as sentences.
    public var warnings: [String]
    /// A recorder was given and could not store the run's end: the run is not kept, which fails the command.
    public var storeFailed: Bool = false
}

extension CoordinatorSession {
    /// Runs `request` on every connected agent: prepare everywhere (any refusal refuses the run, exit 2), start
    /// each phase on all agents together, merge the interval reports, finish. Throws only refusals before start;
    /// once a run has started it always ends in an outcome, whatever breaks.
    public func run(_ request: RunRequest, observer: any RunObserver, recorder: (any RunRecorder)?)
        async throws(LoadgenError) -> RunOutcome
    {
        let participants = self.agents.indices.filter { self.isAlive($0) }
        let configuration = self.configuration
        var machine = RunStateMachine(request: request, agents: self.agents, participants: participants, timing: .init(
            silenceLimitNanos: configuration.silenceLimitNanos, startDelayNanos: configuration.startDelayNanos,
            prepareTimeoutNanos: configuration.prepareTimeoutNanos, finishTimeoutNanos: configuration.finishTimeoutNanos))
        var startedWall: UInt64 = 0
        var pending = machine.begin(nowNanos: MonotonicClock.nowNanos())
        var over = false
        while !over {
            // Carry out what the machine asked for; the recorder's answer goes straight back in.
            var index = 0
            while index < pending.count {
                let action = pending[index]
                index += 1
                switch action {
                case .send(let agent, let message):
                    _ = await self.send(agent, message)
                case .drop(let agent):
                    self.drop(agent)
                case .startRecording:
                    startedWall = MonotonicClock.wallNanos()
                    var answer = RunStateMachine.Event.recorderStarted
                    if let recorder {
                        do throws(LoadgenError) {
                            try await recorder.runStarted(request, agents: self.agents, startedAtWallNanos: startedWall)
                        } catch {
                            answer = .recorderFailed(error)
                        }
                    }
                    pending += machine.handle(answer, nowNanos: MonotonicClock.nowNanos())
                case .recordInterval(let agent, let interval, let latency):
                    observer.interval(interval, from: self.agents[agent])
                    recorder?.intervalReceived(runID: request.runID, agent: self.agents[agent], interval: interval,
                                               latency: latency, receivedAtWallNanos: MonotonicClock.wallNanos())
                case .phaseStarted(let phase, let agents):
                    observer.phaseStarted(request, phase: phase, agents: agents.map { self.agents[$0] })
                case .agentLost(let agent, let message):
                    observer.agentLost(self.agents[agent], message: message)
                case .progress(let snapshot):
                    observer.progress(snapshot)
                case .note(let text):
                    observer.note(text)
                case .done:
                    over = true
                }
            }
            pending = []
            if over { break }
            guard let event = await self.nextEvent() else {
                // The session is ending (its event stream closed): nothing more will arrive.
                pending = machine.abandon()
                continue
            }
            let translated: RunStateMachine.Event
            switch event {
            case .message(let agent, let message): translated = .message(agent, message)
            case .closed(let agent): translated = .closed(agent)
            case .tick: translated = .tick
            case .interrupt: translated = .interrupt
            }
            pending = machine.handle(translated, nowNanos: MonotonicClock.nowNanos())
        }

        guard case .ran(let aggregate, let interrupted)? = machine.outcome else {
            if case .refused(let error)? = machine.outcome { throw error }
            throw LoadgenError(.aborted, "The run was called off.")
        }
        var warnings: [String] = []
        for agent in aggregate.agents where agent.status == .lost && !(agent.runDirectory ?? "").isEmpty {
            if request.workload == .write, request.write?.keep == false {
                warnings.append("Agent \(agent.agentID) was lost; its files may remain in \(agent.runDirectory!).")
            }
        }
        let message = Self.runMessage(aggregate, interrupted: interrupted)
        let report = RunReport(aggregate: aggregate, startedAtWallNanos: startedWall,
                               endedAtWallNanos: MonotonicClock.wallNanos(),
                               loadgenVersion: self.configuration.loadgenVersion, message: message)
        warnings.append(contentsOf: aggregate.agents.compactMap(\.finishedMessage))
        var stored = recorder != nil
        if let recorder {
            do {
                try await recorder.runEnded(report, aggregate: aggregate)
            } catch {
                stored = false
                warnings.append("The run could not be stored: \(error.message)")
            }
        }
        return RunOutcome(report: report, aggregate: aggregate, warnings: warnings, storeFailed: recorder != nil && !stored)
    }

    private static func runMessage(_ aggregate: RunAggregate, interrupted: Bool) -> String? {
        switch aggregate.status {
        case .completed, .running:
            return nil
        case .aborted:
            return interrupted ? "The run was interrupted (Ctrl-C)." : aggregate.agents.first { $0.status == .aborted }?.message
        case .partial:
            let lost = aggregate.agents.filter { $0.status == .lost }
            return "\(lost.count) of \(aggregate.agents.count) agents were lost: " + lost.compactMap(\.message).joined(separator: " ")
        case .failed, .lost:
            return aggregate.agents.compactMap { agent in agent.message.map { aggregate.agents.count == 1 ? $0 : "\(agent.agentID): \($0)" } }
                .joined(separator: " ")
        }
    }
}
