import LoadgenCore

/// A finished run as the coordinator hands it back.
public struct RunOutcome: Sendable {
    public var report: RunReport
    public var aggregate: RunAggregate
    /// Problems around the run that did not stop it (it could not be stored; files were left behind), as sentences.
    public var warnings: [String]
}

extension CoordinatorSession {
    /// Runs `request` on every connected agent: prepare everywhere (any refusal refuses the run, exit 2), start
    /// each phase on all agents together, merge the interval reports, finish. Throws only refusals before start;
    /// once a run has started it always ends in an outcome, whatever breaks.
    public func run(_ request: RunRequest, observer: any RunObserver, recorder: (any RunRecorder)?)
        async throws(LoadgenError) -> RunOutcome
    {
        let participants = self.agents.indices.filter { self.isAlive($0) }
        guard !participants.isEmpty else {
            throw LoadgenError(.unreachable, "No agent is connected: every agent was lost.")
        }
        var aggregate = RunAggregate(request: request, agents: self.agents.map {
            RunAggregate.AgentState(agentID: $0.agentID, host: $0.host, address: $0.address, rttNanos: $0.rttNanos,
                                    clockOffsetNanos: $0.clockOffsetNanos)
        })
        var warnings: [String] = []

        // Prepare on every agent.
        for index in participants { _ = await self.send(index, .prepare(.init(request: request))) }
        var prepared = Set<Int>()
        var refusal: LoadgenError?
        var answered = Set<Int>()
        let prepareDeadline = MonotonicClock.nowNanos() &+ self.configuration.prepareTimeoutNanos
        while answered.count < participants.count {
            guard let event = await self.nextEvent() else { break }
            switch event {
            case .message(let index, .prepared(let message)) where message.runID == request.runID:
                prepared.insert(index)
                answered.insert(index)
                aggregate.agents[index].runDirectory = message.runDirectory
            case .message(let index, .refused(let message)):
                answered.insert(index)
                if refusal == nil {
                    refusal = LoadgenError(message.code, self.agents.count == 1 && self.agents[index].address == "embedded"
                        ? message.message : "Agent \(self.agents[index].agentID) refused the run: \(message.message)")
                }
            case .message(let index, .failure(let failure)):
                answered.insert(index)
                refusal = refusal ?? LoadgenError(.protocolViolation, "Agent \(self.agents[index].agentID) failed: \(failure.message)")
                self.drop(index)
            case .closed(let index) where !answered.contains(index):
                answered.insert(index)
                refusal = refusal ?? LoadgenError(.unreachable, "Agent \(self.agents[index].agentID) closed the connection while preparing the run.")
            case .interrupt:
                refusal = refusal ?? LoadgenError(.aborted, "Interrupted before the run started.")
                answered = Set(participants)
            case .tick:
                let now = MonotonicClock.nowNanos()
                for index in participants where !answered.contains(index) && self.isSilent(index, now: now) {
                    answered.insert(index)
                    refusal = refusal ?? LoadgenError(.unreachable, "Agent \(self.agents[index].agentID) went silent while preparing the run.")
                    self.drop(index)
                }
                if now > prepareDeadline, refusal == nil {
                    refusal = LoadgenError(.unreachable, "The agents did not prepare the run within \(DurationText.format(nanos: self.configuration.prepareTimeoutNanos)).")
                    answered = Set(participants)
                }
            default:
                continue
            }
        }
        if let refusal {
            // Release what was prepared: the agents remove the empty run directories they made.
            await self.finish(request.runID, on: Array(prepared), aggregate: &aggregate)
            throw refusal
        }

        let startedWall = MonotonicClock.wallNanos()
        if let recorder {
            do {
                try await recorder.runStarted(request, agents: self.agents, startedAtWallNanos: startedWall)
            } catch {
                await self.finish(request.runID, on: Array(prepared), aggregate: &aggregate)
                throw error
            }
        }

        var phases: [Phase] = [.main]
        if request.workload == .write, request.write?.keep == false { phases.append(.cleanup) }
        for phase in phases where !self.interrupted {
            let live = participants.filter { self.isAlive($0) && aggregate.agents[$0].status != .lost }
            guard !live.isEmpty else { break }
            await self.runPhase(phase, request: request, on: live, aggregate: &aggregate, observer: observer,
                                recorder: recorder)
            if phase == .main, live.allSatisfy({ aggregate.agents[$0].phase(.main).done?.status == .aborted }) { break }
        }

        let live = participants.filter { self.isAlive($0) }
        await self.finish(request.runID, on: live, aggregate: &aggregate)
        for agent in aggregate.agents where agent.status == .lost && !(agent.runDirectory ?? "").isEmpty {
            if request.workload == .write, request.write?.keep == false {
                warnings.append("Agent \(agent.agentID) was lost; its files may remain in \(agent.runDirectory!).")
            }
        }
        aggregate.settle()
        if self.interrupted {
            for index in aggregate.agents.indices where aggregate.agents[index].status == .completed {
                aggregate.agents[index].status = .aborted
                aggregate.agents[index].message = "The run was interrupted (Ctrl-C)."
            }
        }
        let message = Self.runMessage(aggregate, interrupted: self.interrupted)
        let report = RunReport(aggregate: aggregate, startedAtWallNanos: startedWall,
                               endedAtWallNanos: MonotonicClock.wallNanos(),
                               loadgenVersion: self.configuration.loadgenVersion, message: message)
        warnings.append(contentsOf: aggregate.agents.compactMap(\.finishedMessage))
        if let recorder {
            do {
                try await recorder.runEnded(report, aggregate: aggregate)
            } catch {
                warnings.append("The run could not be stored: \(error.message)")
            }
        }
        return RunOutcome(report: report, aggregate: aggregate, warnings: warnings)
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

    /// Starts `phase` on `live` together and collects until each has reported `phase_done` or was lost.
    private func runPhase(_ phase: Phase, request: RunRequest, on live: [Int], aggregate: inout RunAggregate,
                          observer: any RunObserver, recorder: (any RunRecorder)?) async {
        observer.phaseStarted(request, phase: phase, agents: live.map { self.agents[$0] })
        let delay = self.configuration.startDelayNanos
        let phaseStart = MonotonicClock.nowNanos() &+ delay
        for index in live {
            let halfTrip = min(self.agents[index].rttNanos / 2, delay)
            _ = await self.send(index, .start(.init(runID: request.runID, phase: phase, delayNanos: delay - halfTrip)))
        }
        var expected: UInt64?
        if let write = request.write { expected = UInt64(write.files) * UInt64(live.count) }
        if let total = request.fetch?.totalRequests { expected = UInt64(total) * UInt64(live.count) }
        if phase == .cleanup {
            expected = live.reduce(0) { $0 + aggregate.agents[$1].ops(.main) }
        }
        var done = Set<Int>()
        var abortSent = false
        var lastProgressAt: UInt64 = 0
        // Agents still running this phase. A function of its arguments rather than a closure over `aggregate`: a
        // captured inout is boxed, and every access to a boxed variable pays a dynamic exclusivity check.
        func pending(_ aggregate: borrowing RunAggregate, _ done: Set<Int>) -> [Int] {
            live.filter { !done.contains($0) && aggregate.agents[$0].status != .lost && self.isAlive($0) }
        }
        while !pending(aggregate, done).isEmpty {
            guard let event = await self.nextEvent() else { break }
            switch event {
            case .message(let index, .interval(let interval)) where interval.runID == request.runID:
                do {
                    let latency = try aggregate.apply(agent: index, interval: interval)
                    recorder?.intervalReceived(runID: request.runID, agent: self.agents[index], interval: interval,
                                               latency: latency, receivedAtWallNanos: MonotonicClock.wallNanos())
                } catch {
                    self.lose(index, "Agent \(self.agents[index].agentID) sent a malformed interval: \(error.message)",
                              aggregate: &aggregate, observer: observer)
                }
            case .message(let index, .phaseDone(let message)) where message.runID == request.runID && message.phase == phase:
                aggregate.apply(agent: index, phaseDone: message)
                done.insert(index)
            case .message(let index, .failure(let failure)):
                self.lose(index, "Agent \(self.agents[index].agentID) reported an error: \(failure.message)",
                          aggregate: &aggregate, observer: observer)
            case .closed(let index) where live.contains(index) && !done.contains(index):
                self.lose(index, "Agent \(self.agents[index].agentID) closed the connection during the run.",
                          aggregate: &aggregate, observer: observer)
            case .interrupt:
                if !abortSent {
                    abortSent = true
                    for index in pending(aggregate, done) {
                        _ = await self.send(index, .abort(.init(runID: request.runID, reason: "The coordinator was interrupted (Ctrl-C).")))
                    }
                    observer.note("Interrupted: stopping every agent (Ctrl-C again to quit at once).")
                } else {
                    return
                }
            case .tick:
                let now = MonotonicClock.nowNanos()
                let waiting = pending(aggregate, done)
                for index in waiting where self.isSilent(index, now: now) {
                    let silent = now &- self.lastHeardAt(index)
                    self.lose(index, "Agent \(self.agents[index].agentID) was silent for \(DurationText.format(nanos: silent)) and was marked lost.",
                              aggregate: &aggregate, observer: observer)
                }
                // The live view needs a few updates a second, not one per tick.
                guard now &- lastProgressAt >= 250_000_000 else { continue }
                lastProgressAt = now
                let cluster = live.reduce(UInt64(0)) { $0 + aggregate.agents[$1].ops(phase) }
                let rate = live.reduce(0.0) { $0 + (aggregate.agents[$1].phases[phase]?.currentRate ?? 0) }
                let errors = live.reduce(UInt64(0)) { $0 + aggregate.agents[$1].errors(phase) }
                observer.progress(ProgressSnapshot(
                    request: request, phase: phase, elapsedNanos: now > phaseStart ? now - phaseStart : 0, ops: cluster,
                    expectedOps: expected, errors: errors, currentRate: rate,
                    agentsRunning: pending(aggregate, done).count, agentsLost: live.filter { aggregate.agents[$0].status == .lost }.count))
            default:
                continue
            }
        }
    }

    /// Sends `finish` and waits (bounded) for each agent's `finished`.
    private func finish(_ runID: String, on indices: [Int], aggregate: inout RunAggregate) async {
        var waiting = Set(indices.filter { self.isAlive($0) })
        for index in waiting { _ = await self.send(index, .finish(.init(runID: runID))) }
        let deadline = MonotonicClock.nowNanos() &+ self.configuration.finishTimeoutNanos
        while !waiting.isEmpty {
            guard let event = await self.nextEvent() else { return }
            switch event {
            case .message(let index, .finished(let message)) where message.runID == runID:
                waiting.remove(index)
                aggregate.agents[index].finishedMessage = message.message
            case .message(let index, .interval(let interval)) where interval.runID == runID:
                // A late report from a stopped phase still counts.
                _ = try? aggregate.apply(agent: index, interval: interval)
            case .message(let index, .phaseDone(let done)) where done.runID == runID:
                aggregate.apply(agent: index, phaseDone: done)
            case .closed(let index), .message(let index, .failure):
                waiting.remove(index)
            case .tick:
                let now = MonotonicClock.nowNanos()
                if now > deadline { return }
                for index in waiting where self.isSilent(index, now: now) { waiting.remove(index) }
            default:
                continue
            }
        }
    }

    private func lose(_ index: Int, _ message: String, aggregate: inout RunAggregate, observer: any RunObserver) {
        guard aggregate.agents[index].status != .lost else { return }
        aggregate.markLost(agent: index, message: message)
        observer.agentLost(self.agents[index], message: message)
        self.drop(index)
    }
}
