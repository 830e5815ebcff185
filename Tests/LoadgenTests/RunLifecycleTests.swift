import Testing
@testable import LoadgenCore

/// The run lifecycle's two state machines without sockets: every transition of the coordinator's view of a run and
/// of the agent's session, and a seeded simulation of both together over thousands of interleavings.
struct RunLifecycleTests {
    typealias Machine = RunStateMachine
    typealias Agent = AgentSessionStateMachine

    static let policy = AgentPolicySummary(allowedRoots: ["/"], maxFiles: 1000, maxBytes: 1 << 30, maxWorkers: 64,
                                           maxDurationNanos: 3_600_000_000_000, maxRate: 1000)

    static func agents(_ count: Int) -> [ConnectedAgent] {
        (0..<count).map {
            ConnectedAgent(index: $0, address: "10.0.0.\($0 + 1):7420", agentID: "agent\($0)", host: "host\($0)", cores: 2,
                           loadgenVersion: "test", policy: Self.policy, openFileLimit: 1024, rttNanos: 100_000,
                           clockOffsetNanos: 0)
        }
    }

    static func request(_ runID: String = "r1", keep: Bool = false) -> RunRequest {
        RunRequest(runID: runID, label: nil,
                   write: WriteSpec(target: "/tmp", files: 10, size: SizeRange(lowerBytes: 2, upperBytes: 2), dirs: 1,
                                    fsync: .none, keep: keep),
                   mode: .threads, workers: 2, seed: 1)
    }

    /// Intervals of 0 to 10 operations, made once (a tally's histogram is not cheap to build in a debug build).
    static let intervalTemplates: [WireMessage.Interval] = (0...10).map { ops in
        var tally = Tally()
        tally.ops = UInt64(ops)
        for _ in 0..<ops { tally.recordLatency(10_000) }
        return WireMessage.Interval(runID: "", phase: .main, seq: 0, elapsedNanos: 0, tally: tally)
    }

    static func interval(_ runID: String, _ phase: Phase, seq: Int, ops: Int) -> WireMessage {
        var interval = Self.intervalTemplates[ops]
        interval.runID = runID
        interval.phase = phase
        interval.seq = seq
        interval.elapsedNanos = UInt64(seq + 1) * 1_000_000
        return .interval(interval)
    }

    static func phaseDone(_ runID: String, _ phase: Phase, ops: UInt64, status: RunStatus = .completed) -> WireMessage {
        .phaseDone(.init(runID: runID, phase: phase, status: status, message: status == .completed ? nil : "stopped",
                         ops: ops, bytes: ops * 2, errors: 0, durationNanos: 1_000_000, firstDoneNanos: 900_000,
                         lastDoneNanos: 1_000_000))
    }

    /// The messages the actions send, as (agent, kind).
    static func sent(_ actions: [Machine.Action]) -> [String] {
        actions.compactMap { if case .send(let i, let m) = $0 { "\(i):\(m.kind.rawValue)" } else { nil } }
    }

    static func isDone(_ actions: [Machine.Action]) -> Bool {
        actions.contains { if case .done = $0 { true } else { false } }
    }

    // MARK: - The coordinator's machine

    @Test func everyTransitionOfACompletedRunInOrder() throws {
        var m = Machine(request: Self.request(), agents: Self.agents(1), participants: [0], timing: .init())
        var now: UInt64 = 1_000
        #expect(Self.sent(m.begin(nowNanos: now)) == ["0:prepare"])
        #expect(m.agentStages == [.preparing])

        var actions = m.handle(.message(0, .prepared(.init(runID: "r1", runDirectory: "/tmp/d"))), nowNanos: now)
        #expect(actions.contains { if case .startRecording = $0 { true } else { false } })
        #expect(m.stage == .recording)

        actions = m.handle(.recorderStarted, nowNanos: now)
        #expect(Self.sent(actions) == ["0:start"])
        #expect(m.agentStages == [.running(.main)])

        now += 1_000_000
        actions = m.handle(.message(0, Self.interval("r1", .main, seq: 0, ops: 10)), nowNanos: now)
        #expect(actions.contains { if case .recordInterval(0, _, _) = $0 { true } else { false } })
        actions = m.handle(.message(0, Self.phaseDone("r1", .main, ops: 10)), nowNanos: now)
        #expect(Self.sent(actions) == ["0:start"], "the cleanup phase starts")
        #expect(m.agentStages == [.phaseDone(.main)] || m.agentStages == [.running(.cleanup)])
        #expect(m.agentStages == [.running(.cleanup)])

        _ = m.handle(.message(0, Self.interval("r1", .cleanup, seq: 0, ops: 10)), nowNanos: now)
        actions = m.handle(.message(0, Self.phaseDone("r1", .cleanup, ops: 10)), nowNanos: now)
        #expect(Self.sent(actions) == ["0:finish"])
        #expect(m.agentStages == [.finishing])

        actions = m.handle(.message(0, .finished(.init(runID: "r1", message: nil))), nowNanos: now)
        #expect(!Self.isDone(actions), "finished is not the end: the slot is not free yet")
        #expect(m.agentStages == [.finished])
        actions = m.handle(.message(0, .closed(.init(runID: "r1"))), nowNanos: now)
        #expect(Self.isDone(actions))
        #expect(m.stage == .done)
        guard case .ran(let aggregate, let interrupted)? = m.outcome else { Issue.record("no outcome"); return }
        #expect(!interrupted)
        #expect(aggregate.status == .completed)
        #expect(aggregate.agents[0].ops(.main) == 10)
        #expect(aggregate.agents[0].runDirectory == "/tmp/d")
        #expect(m.handle(.tick, nowNanos: now + 10_000_000_000).isEmpty, "a done run does nothing more")
    }

    @Test func aKeptRunHasNoCleanupPhase() {
        var m = Machine(request: Self.request(keep: true), agents: Self.agents(1), participants: [0], timing: .init())
        _ = m.begin(nowNanos: 0)
        _ = m.handle(.message(0, .prepared(.init(runID: "r1", runDirectory: nil))), nowNanos: 0)
        _ = m.handle(.recorderStarted, nowNanos: 0)
        #expect(Self.sent(m.handle(.message(0, Self.phaseDone("r1", .main, ops: 10)), nowNanos: 0)) == ["0:finish"])
    }

    @Test func aMixedPrepareReleasesThePreparedAgentAndWaitsForBothCloses() {
        var m = Machine(request: Self.request(), agents: Self.agents(2), participants: [0, 1], timing: .init())
        _ = m.begin(nowNanos: 0)
        #expect(m.handle(.message(0, .prepared(.init(runID: "r1", runDirectory: "/tmp/a"))), nowNanos: 0).isEmpty)
        let actions = m.handle(.message(1, .refused(.init(runID: "r1", code: .policy, message: "Too many files."))), nowNanos: 0)
        #expect(Self.sent(actions) == ["0:finish"], "only the prepared agent is released")
        #expect(m.agentStages == [.finishing, .refused])
        #expect(!Self.isDone(m.handle(.message(1, .closed(.init(runID: "r1"))), nowNanos: 0)))
        _ = m.handle(.message(0, .finished(.init(runID: "r1", message: nil))), nowNanos: 0)
        #expect(Self.isDone(m.handle(.message(0, .closed(.init(runID: "r1"))), nowNanos: 0)))
        guard case .refused(let error)? = m.outcome else { Issue.record("not refused"); return }
        #expect(error.code == .policy)
        #expect(error.message == "Agent agent1 refused the run: Too many files.")
    }

    @Test func aPrepareTimeoutCallsTheRunOffAndReleasesEveryone() {
        let timing = Machine.Timing(silenceLimitNanos: 100_000_000_000, prepareTimeoutNanos: 5_000_000_000)
        var m = Machine(request: Self.request(), agents: Self.agents(2), participants: [0, 1], timing: timing)
        _ = m.begin(nowNanos: 0)
        _ = m.handle(.message(0, .prepared(.init(runID: "r1", runDirectory: nil))), nowNanos: 1)
        #expect(m.handle(.tick, nowNanos: 4_000_000_000).isEmpty)
        let actions = m.handle(.tick, nowNanos: 5_000_000_001)
        #expect(Set(Self.sent(actions)) == ["0:finish", "1:finish"], "the slow agent may still prepare: it is released too")
        _ = m.handle(.message(0, .closed(.init(runID: "r1"))), nowNanos: 5_000_000_002)
        #expect(Self.isDone(m.handle(.message(1, .closed(.init(runID: "r1"))), nowNanos: 5_000_000_003)))
        guard case .refused(let error)? = m.outcome else { Issue.record("not refused"); return }
        #expect(error.message == "The agents did not prepare the run within 5.00s.")
    }

    @Test func aCloseTimeoutDropsTheAgentWithANote() {
        let timing = Machine.Timing(silenceLimitNanos: 100_000_000_000, finishTimeoutNanos: 1_000_000_000)
        var m = Machine(request: Self.request(keep: true), agents: Self.agents(1), participants: [0], timing: timing)
        _ = m.begin(nowNanos: 0)
        _ = m.handle(.message(0, .prepared(.init(runID: "r1", runDirectory: nil))), nowNanos: 0)
        _ = m.handle(.recorderStarted, nowNanos: 0)
        _ = m.handle(.message(0, Self.phaseDone("r1", .main, ops: 10)), nowNanos: 0)
        _ = m.handle(.message(0, .finished(.init(runID: "r1", message: nil))), nowNanos: 0)
        let actions = m.handle(.tick, nowNanos: 1_000_000_001)
        #expect(actions.contains { if case .note(let text) = $0 { text.contains("did not close run r1 within") } else { false } })
        #expect(actions.contains { if case .drop(0) = $0 { true } else { false } })
        #expect(Self.isDone(actions))
        #expect(m.agentStages == [.gone])
        guard case .ran(let aggregate, _)? = m.outcome else { Issue.record("no outcome"); return }
        #expect(aggregate.status == .completed, "the run's figures were all in: a slow close does not fail it")
    }

    @Test func lateIntervalsDuringFinishStillCount() {
        var m = Machine(request: Self.request(), agents: Self.agents(1), participants: [0], timing: .init())
        _ = m.begin(nowNanos: 0)
        _ = m.handle(.message(0, .prepared(.init(runID: "r1", runDirectory: nil))), nowNanos: 0)
        _ = m.handle(.recorderStarted, nowNanos: 0)
        _ = m.handle(.message(0, Self.interval("r1", .main, seq: 0, ops: 3)), nowNanos: 0)
        let first = m.handle(.interrupt, nowNanos: 1)
        #expect(Self.sent(first) == ["0:abort"])
        #expect(Self.sent(m.handle(.interrupt, nowNanos: 2)) == ["0:finish"], "a second Ctrl-C stops waiting for the phase")
        _ = m.handle(.message(0, Self.interval("r1", .main, seq: 1, ops: 4)), nowNanos: 3)
        _ = m.handle(.message(0, Self.phaseDone("r1", .main, ops: 7, status: .aborted)), nowNanos: 3)
        _ = m.handle(.message(0, .finished(.init(runID: "r1", message: nil))), nowNanos: 4)
        #expect(Self.isDone(m.handle(.message(0, .closed(.init(runID: "r1"))), nowNanos: 5)))
        guard case .ran(let aggregate, let interrupted)? = m.outcome else { Issue.record("no outcome"); return }
        #expect(interrupted)
        #expect(aggregate.agents[0].ops(.main) == 7)
        #expect(aggregate.agents[0].phase(.main).done?.ops == 7)
        #expect(aggregate.status == .aborted)
    }

    @Test func anAgentLostWhilePreparingRefusesTheRun() {
        var m = Machine(request: Self.request(), agents: Self.agents(2), participants: [0, 1], timing: .init())
        _ = m.begin(nowNanos: 0)
        _ = m.handle(.message(0, .prepared(.init(runID: "r1", runDirectory: nil))), nowNanos: 0)
        let actions = m.handle(.closed(1), nowNanos: 0)
        #expect(actions.contains { if case .drop(1) = $0 { true } else { false } })
        #expect(Self.sent(actions) == ["0:finish"])
        _ = m.handle(.message(0, .closed(.init(runID: "r1"))), nowNanos: 0)
        guard case .refused(let error)? = m.outcome else { Issue.record("not refused"); return }
        #expect(error.message == "Agent agent1 closed the connection while preparing the run.")
    }

    @Test func anAgentSilentWhilePreparingRefusesTheRun() {
        var m = Machine(request: Self.request(), agents: Self.agents(1), participants: [0], timing: .init(silenceLimitNanos: 1_000))
        _ = m.begin(nowNanos: 0)
        let actions = m.handle(.tick, nowNanos: 2_000)
        #expect(Self.isDone(actions))
        guard case .refused(let error)? = m.outcome else { Issue.record("not refused"); return }
        #expect(error.message == "Agent agent0 went silent while preparing the run.")
    }

    @Test func anAgentLostDuringAPhaseKeepsWhatItReportedAndTheRunGoesOn() {
        var m = Machine(request: Self.request(keep: true), agents: Self.agents(2), participants: [0, 1],
                        timing: .init(silenceLimitNanos: 1_000_000_000))
        _ = m.begin(nowNanos: 0)
        _ = m.handle(.message(0, .prepared(.init(runID: "r1", runDirectory: nil))), nowNanos: 0)
        _ = m.handle(.message(1, .prepared(.init(runID: "r1", runDirectory: "/tmp/b"))), nowNanos: 0)
        _ = m.handle(.recorderStarted, nowNanos: 0)
        _ = m.handle(.message(1, Self.interval("r1", .main, seq: 0, ops: 5)), nowNanos: 100)
        _ = m.handle(.message(0, Self.interval("r1", .main, seq: 0, ops: 5)), nowNanos: 1_500_000_000)
        let actions = m.handle(.tick, nowNanos: 1_600_000_000)
        #expect(actions.contains { if case .agentLost(1, let text) = $0 { text.hasPrefix("Agent agent1 was silent for") } else { false } })
        #expect(m.agentStages[1] == .lost)
        // What a lost agent sends after its loss is not counted.
        _ = m.handle(.message(1, Self.interval("r1", .main, seq: 1, ops: 5)), nowNanos: 1_600_000_001)
        _ = m.handle(.message(0, Self.phaseDone("r1", .main, ops: 5)), nowNanos: 1_600_000_002)
        _ = m.handle(.message(0, .finished(.init(runID: "r1", message: nil))), nowNanos: 1_600_000_003)
        #expect(Self.isDone(m.handle(.message(0, .closed(.init(runID: "r1"))), nowNanos: 1_600_000_004)))
        guard case .ran(let aggregate, _)? = m.outcome else { Issue.record("no outcome"); return }
        #expect(aggregate.agents[1].ops(.main) == 5)
        #expect(aggregate.status == .partial)
    }

    @Test func anAgentThatClosesItsConnectionDuringAPhaseIsLost() {
        var m = Machine(request: Self.request(keep: true), agents: Self.agents(1), participants: [0], timing: .init())
        _ = m.begin(nowNanos: 0)
        _ = m.handle(.message(0, .prepared(.init(runID: "r1", runDirectory: nil))), nowNanos: 0)
        _ = m.handle(.recorderStarted, nowNanos: 0)
        let actions = m.handle(.closed(0), nowNanos: 0)
        #expect(actions.contains { if case .agentLost(0, "Agent agent0 closed the connection during the run.") = $0 { true } else { false } })
        #expect(Self.isDone(actions), "with no agent left the run ends at once")
        guard case .ran(let aggregate, _)? = m.outcome else { Issue.record("no outcome"); return }
        #expect(aggregate.status == .failed)
    }

    @Test func anAgentLostWhileFinishingIsGoneWithoutChangingTheStatus() {
        var m = Machine(request: Self.request(keep: true), agents: Self.agents(2), participants: [0, 1], timing: .init())
        _ = m.begin(nowNanos: 0)
        for i in 0..<2 { _ = m.handle(.message(i, .prepared(.init(runID: "r1", runDirectory: nil))), nowNanos: 0) }
        _ = m.handle(.recorderStarted, nowNanos: 0)
        for i in 0..<2 { _ = m.handle(.message(i, Self.phaseDone("r1", .main, ops: 10)), nowNanos: 0) }
        #expect(m.agentStages == [.finishing, .finishing])
        _ = m.handle(.closed(1), nowNanos: 0)
        #expect(m.agentStages[1] == .gone)
        _ = m.handle(.message(0, .finished(.init(runID: "r1", message: nil))), nowNanos: 0)
        #expect(Self.isDone(m.handle(.message(0, .closed(.init(runID: "r1"))), nowNanos: 0)))
        guard case .ran(let aggregate, _)? = m.outcome else { Issue.record("no outcome"); return }
        #expect(aggregate.status == .completed)
    }

    @Test func aFailingRecorderRefusesTheRunAndReleasesTheAgents() {
        var m = Machine(request: Self.request(), agents: Self.agents(1), participants: [0], timing: .init())
        _ = m.begin(nowNanos: 0)
        _ = m.handle(.message(0, .prepared(.init(runID: "r1", runDirectory: nil))), nowNanos: 0)
        let actions = m.handle(.recorderFailed(LoadgenError(.store, "The disk is full.")), nowNanos: 0)
        #expect(Self.sent(actions) == ["0:finish"])
        _ = m.handle(.message(0, .closed(.init(runID: "r1"))), nowNanos: 0)
        guard case .refused(let error)? = m.outcome else { Issue.record("not refused"); return }
        #expect(error.message == "The disk is full.")
    }

    @Test func aMainPhaseAbortedEverywhereSkipsCleanup() {
        var m = Machine(request: Self.request(), agents: Self.agents(1), participants: [0], timing: .init())
        _ = m.begin(nowNanos: 0)
        _ = m.handle(.message(0, .prepared(.init(runID: "r1", runDirectory: nil))), nowNanos: 0)
        _ = m.handle(.recorderStarted, nowNanos: 0)
        #expect(Self.sent(m.handle(.message(0, Self.phaseDone("r1", .main, ops: 1, status: .aborted)), nowNanos: 0)) == ["0:finish"])
    }

    @Test func progressIsReportedAFewTimesASecond() {
        var m = Machine(request: Self.request(), agents: Self.agents(1), participants: [0], timing: .init())
        _ = m.begin(nowNanos: 0)
        _ = m.handle(.message(0, .prepared(.init(runID: "r1", runDirectory: nil))), nowNanos: 0)
        _ = m.handle(.recorderStarted, nowNanos: 0)
        _ = m.handle(.message(0, Self.interval("r1", .main, seq: 0, ops: 4)), nowNanos: 100_000_000)
        #expect(m.handle(.tick, nowNanos: 100_000_000).isEmpty)
        let actions = m.handle(.tick, nowNanos: 300_000_000)
        guard case .progress(let snapshot)? = actions.first else { Issue.record("no progress"); return }
        #expect(snapshot.ops == 4)
        #expect(snapshot.expectedOps == 10)
        #expect(snapshot.agentsRunning == 1)
    }

    @Test func noParticipantIsRefusedAtOnce() {
        var m = Machine(request: Self.request(), agents: Self.agents(1), participants: [], timing: .init())
        #expect(Self.isDone(m.begin(nowNanos: 0)))
        guard case .refused(let error)? = m.outcome else { Issue.record("not refused"); return }
        #expect(error.code == .unreachable)
    }

    // MARK: - The agent's machine

    struct FakeProver: SecretProver {
        func proof(label: String, first: String, second: String) -> String { "\(label)|\(first)|\(second)" }
        func verify(_ proof: String, label: String, first: String, second: String) -> Bool {
            proof == self.proof(label: label, first: first, second: second)
        }
    }

    static let coordinatorNonce = String(repeating: "ab", count: 32)
    static let agentNonce = String(repeating: "cd", count: 32)

    static func agentMachine(prover: (any SecretProver)? = nil, now: UInt64 = 0) -> Agent {
        Agent(greeting: .init(agentID: "a", host: "h", cores: 2, loadgenVersion: "test", nonce: Self.agentNonce,
                              ready: .init(policy: Self.policy, openFileLimit: 1024)),
              prover: prover, peer: "c", nowNanos: now, silenceLimitNanos: 1_000, handshakeDeadlineNanos: 5_000,
              closeWaitNanos: 10_000)
    }

    static func readyAgent() -> Agent {
        var a = Self.agentMachine()
        _ = a.handle(.received(.hello(.init(loadgenVersion: "t", coordinatorHost: "c", nonce: Self.coordinatorNonce))), nowNanos: 0)
        _ = a.handle(.received(.auth(.init(proof: nil))), nowNanos: 0)
        return a
    }

    static func kinds(_ actions: [Agent.Action]) -> [String] {
        actions.map {
            switch $0 {
            case .send(let m): "send:\(m.kind.rawValue)"
            case .sendAndClose(let m): "close:\(m.kind.rawValue)"
            case .close: "close"
            case .pong: "pong"
            case .answerHeartbeat: "heartbeat"
            case .prepare(let r): "prepare:\(r.runID)"
            case .startPhase(let id, let phase, _): "start:\(id):\(phase.rawValue)"
            case .finishRun(let id): "finish:\(id)"
            case .stopRun(let id, _): "stop:\(id)"
            case .clean(let c): "clean:\(c.target)"
            }
        }
    }

    @Test func theAgentHandshakeProvesBothWays() {
        var a = Self.agentMachine(prover: FakeProver())
        let welcome = a.handle(.received(.hello(.init(loadgenVersion: "t", coordinatorHost: "c", nonce: Self.coordinatorNonce))), nowNanos: 0)
        guard case .send(.welcome(let w))? = welcome.first else { Issue.record("no welcome"); return }
        #expect(w.authRequired)
        #expect(w.proof == FakeProver().proof(label: Handshake.agentLabel, first: Self.coordinatorNonce, second: Self.agentNonce))
        #expect(a.stage == .awaitingAuth(coordinatorNonce: Self.coordinatorNonce))
        let proof = FakeProver().proof(label: Handshake.coordinatorLabel, first: Self.agentNonce, second: Self.coordinatorNonce)
        #expect(Self.kinds(a.handle(.received(.auth(.init(proof: proof))), nowNanos: 0)) == ["send:ready"])
        #expect(a.stage == .ready)
        #expect(Self.kinds(a.handle(.received(.ping(.init(seq: 1, sentNanos: 2))), nowNanos: 0)) == ["pong"])
        #expect(Self.kinds(a.handle(.received(.heartbeat(.init(seq: 1))), nowNanos: 0)) == ["heartbeat"])
    }

    @Test func theAgentRefusesABadProofAVersionAndAnEarlyMessage() {
        var a = Self.agentMachine(prover: FakeProver())
        _ = a.handle(.received(.hello(.init(loadgenVersion: "t", coordinatorHost: "c", nonce: Self.coordinatorNonce))), nowNanos: 0)
        #expect(Self.kinds(a.handle(.received(.auth(.init(proof: "forged"))), nowNanos: 0)) == ["close:error"])
        #expect(a.stage == .over)

        var b = Self.agentMachine()
        var hello = WireMessage.Hello(loadgenVersion: "t", coordinatorHost: "c", nonce: Self.coordinatorNonce)
        hello.protocolVersion = WireMessage.protocolVersion + 1
        #expect(Self.kinds(b.handle(.received(.hello(hello)), nowNanos: 0)) == ["close:error"])

        var c = Self.agentMachine()
        #expect(Self.kinds(c.handle(.received(.prepare(.init(request: Self.request()))), nowNanos: 0)) == ["close:error"])
    }

    @Test func theAgentHandshakeHasADeadline() {
        var a = Self.agentMachine()
        #expect(a.handle(.tick, nowNanos: 5_000).isEmpty)
        let actions = a.handle(.tick, nowNanos: 5_001)
        guard case .sendAndClose(.failure(let f))? = actions.first else { Issue.record("no failure"); return }
        #expect(f.message.hasPrefix("The handshake did not finish within"))
    }

    /// A clean needs the handshake, goes beside a run, and runs one at a time per connection.
    @Test func theAgentCleansOnceReadyOneAtATime() {
        var early = Self.agentMachine()
        let clean = WireMessage.Clean(target: "/data", includeKept: false, dryRun: false)
        #expect(Self.kinds(early.handle(.received(.clean(clean)), nowNanos: 0)) == ["close:error"])
        var a = Self.readyAgent()
        #expect(Self.kinds(a.handle(.received(.clean(clean)), nowNanos: 0)) == ["clean:/data"])
        #expect(a.cleaning)
        let second = a.handle(.received(.clean(clean)), nowNanos: 0)
        guard case .send(.cleaned(let refused))? = second.first else { Issue.record("no refusal: \(second)"); return }
        #expect(refused.report == nil)
        #expect(refused.refusal?.message.contains("one clean at a time") == true)
        // A run is prepared meanwhile: the clean does not hold it up.
        #expect(Self.kinds(a.handle(.received(.prepare(.init(request: Self.request("r1")))), nowNanos: 0)) == ["prepare:r1"])
        let done = WireMessage.cleaned(.init(target: "/data", report: CleanReport(target: "/data", dryRun: false), refusal: nil))
        #expect(Self.kinds(a.handle(.runEmitted(done), nowNanos: 0)) == ["send:cleaned"])
        #expect(!a.cleaning)
        #expect(a.run == .preparing("r1"))
        #expect(Self.kinds(a.handle(.received(.clean(clean)), nowNanos: 0)) == ["clean:/data"])
    }

    @Test func theAgentRunLifecycleEndsWithClosedOnlyWhenTheSlotIsFree() {
        var a = Self.readyAgent()
        #expect(Self.kinds(a.handle(.received(.prepare(.init(request: Self.request()))), nowNanos: 0)) == ["prepare:r1"])
        #expect(a.run == .preparing("r1"))
        #expect(Self.kinds(a.handle(.received(.start(.init(runID: "r1", phase: .main, delayNanos: 0))), nowNanos: 0)) == ["close:error", "stop:r1", "finish:r1"],
                "a start before prepared is a protocol error: the connection closes and the run is stopped")

        var b = Self.readyAgent()
        _ = b.handle(.received(.prepare(.init(request: Self.request()))), nowNanos: 0)
        #expect(Self.kinds(b.handle(.runEmitted(.prepared(.init(runID: "r1", runDirectory: nil))), nowNanos: 0)) == ["send:prepared"])
        #expect(b.run == .active("r1"))
        #expect(Self.kinds(b.handle(.received(.start(.init(runID: "r1", phase: .main, delayNanos: 5))), nowNanos: 0)) == ["start:r1:main"])
        #expect(Self.kinds(b.handle(.received(.abort(.init(runID: "r1", reason: "x"))), nowNanos: 0)) == ["stop:r1"])
        #expect(Self.kinds(b.handle(.received(.finish(.init(runID: "r1"))), nowNanos: 0)) == ["finish:r1"])
        #expect(b.run == .finishing("r1"))
        #expect(Self.kinds(b.handle(.runEmitted(.finished(.init(runID: "r1", message: nil))), nowNanos: 0)) == ["send:finished"])
        #expect(b.run == .closing("r1"))
        // The next run's prepare arrives before the slot is free: it waits, it is not refused.
        #expect(b.handle(.received(.prepare(.init(request: Self.request("r2")))), nowNanos: 10).isEmpty)
        #expect(Self.kinds(b.handle(.runEnded("r1"), nowNanos: 20)) == ["send:closed", "prepare:r2"])
        #expect(b.run == .preparing("r2"))
    }

    @Test func aPrepareWaitingForACloseIsRefusedAfterTheBound() {
        var a = Self.readyAgent()
        _ = a.handle(.received(.prepare(.init(request: Self.request()))), nowNanos: 0)
        _ = a.handle(.runEmitted(.refused(.init(runID: "r1", code: .policy, message: "no"))), nowNanos: 0)
        #expect(a.run == .closing("r1"))
        _ = a.handle(.received(.prepare(.init(request: Self.request("r2")))), nowNanos: 0)
        #expect(a.handle(.tick, nowNanos: 500).isEmpty)
        let actions = a.handle(.tick, nowNanos: 10_001)
        #expect(Self.kinds(actions) == ["send:refused", "send:closed"])
        guard case .send(.refused(let r))? = actions.first else { return }
        #expect(r.runID == "r2")
        #expect(r.message.contains("was still closing run r1"))
        #expect(Self.kinds(a.handle(.runEnded("r1"), nowNanos: 10_002)) == ["send:closed"])
        #expect(a.run == .idle)
    }

    @Test func theDeadManSwitchStopsTheRunOnce() {
        var a = Self.readyAgent()
        _ = a.handle(.received(.prepare(.init(request: Self.request()))), nowNanos: 0)
        _ = a.handle(.runEmitted(.prepared(.init(runID: "r1", runDirectory: nil))), nowNanos: 0)
        #expect(a.handle(.tick, nowNanos: 1_000).isEmpty)
        #expect(Self.kinds(a.handle(.tick, nowNanos: 1_001)) == ["stop:r1"])
        #expect(a.handle(.tick, nowNanos: 2_000).isEmpty)
    }

    @Test func aClosedConnectionStopsAndReleasesTheRun() {
        var a = Self.readyAgent()
        _ = a.handle(.received(.prepare(.init(request: Self.request()))), nowNanos: 0)
        _ = a.handle(.runEmitted(.prepared(.init(runID: "r1", runDirectory: nil))), nowNanos: 0)
        #expect(Self.kinds(a.handle(.connectionClosed, nowNanos: 1)) == ["stop:r1", "finish:r1"])
        #expect(a.stage == .over)
        #expect(a.handle(.runEnded("r1"), nowNanos: 2).isEmpty)
        #expect(a.run == .idle)
    }

    // MARK: - Both together, in random interleavings

    /// A fake run on a simulated agent: what it will emit, step by step.
    struct FakeRun {
        var runID: String
        var outbox: [WireMessage] = []
        var willEnd = false
        var stopped = false
    }

    struct SimAgent {
        var machine: Agent
        var run: FakeRun?
        /// Coordinator → agent and agent → coordinator, in order (a TCP connection).
        var inbound: [WireMessage] = []
        var outbound: [WireMessage] = []
        var connected = true
        /// Stopped sending (a hung host): the coordinator hears nothing more from it.
        var silent = false
    }

    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        init(seed: UInt64) { self.state = seed }
        mutating func next() -> UInt64 {
            self.state &+= 0x9E37_79B9_7F4A_7C15
            var z = self.state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Thousands of seeded interleavings of two consecutive runs on 1 to 5 agents: deliveries in any order across
    /// agents, ticks with heartbeats, fake runs that prepare or refuse, connections that break, agents that go
    /// silent, Ctrl-C, a recorder that fails.
    @Test func randomInterleavingsKeepEveryInvariant() {
        var world = Simulation.Totals()
        for seed in 0..<2000 {
            var simulation = Simulation(seed: UInt64(seed))
            simulation.run(totals: &world)
            if simulation.failed { break }
        }
        print("simulated \(world.runs) runs: \(world.ran) ran, \(world.refused) refused, \(world.lost) agents lost, \(world.secondRuns) second runs, \(world.steps) steps")
        #expect(world.ran > 1500, "most runs must get started, not refused (\(world.ran) of \(world.runs))")
        #expect(world.refused > 50, "refusals must be exercised too (\(world.refused))")
        #expect(world.lost > 50, "losses must be exercised too (\(world.lost))")
        #expect(world.secondRuns > 800, "the next run must follow a closed one often (\(world.secondRuns))")
    }

    struct Simulation {
        struct Totals {
            var runs = 0, ran = 0, refused = 0, lost = 0, secondRuns = 0, steps = 0
        }

        let seed: UInt64
        var rng: SeededGenerator
        var sims: [SimAgent]
        var holding: [String?]
        var now: UInt64 = 0
        var failed = false
        let count: Int
        let agents: [ConnectedAgent]
        let timing = RunStateMachine.Timing(silenceLimitNanos: 4_000, startDelayNanos: 10, prepareTimeoutNanos: 60_000,
                                            finishTimeoutNanos: 40_000, progressIntervalNanos: 250)

        init(seed: UInt64) {
            self.seed = seed
            self.rng = SeededGenerator(seed: seed &* 0x2545_F491_4F6C_DD1D &+ 7)
            self.count = 1 + Int(self.rng.next() % 5)
            self.agents = RunLifecycleTests.agents(self.count)
            self.sims = (0..<self.count).map { _ in
                var machine = AgentSessionStateMachine(
                    greeting: .init(agentID: "a", host: "h", cores: 2, loadgenVersion: "test", nonce: RunLifecycleTests.agentNonce,
                                    ready: .init(policy: RunLifecycleTests.policy, openFileLimit: 1024)),
                    prover: nil, peer: "c", nowNanos: 0, silenceLimitNanos: 3_000, handshakeDeadlineNanos: 5_000_000,
                    closeWaitNanos: 20_000)
                _ = machine.handle(.received(.hello(.init(loadgenVersion: "t", coordinatorHost: "c", nonce: RunLifecycleTests.coordinatorNonce))), nowNanos: 0)
                _ = machine.handle(.received(.auth(.init(proof: nil))), nowNanos: 0)
                return SimAgent(machine: machine)
            }
            self.holding = Array(repeating: nil, count: self.count)
        }

        mutating func check(_ condition: Bool, _ text: String) {
            guard !condition, !self.failed else { return }
            self.failed = true
            Issue.record("seed \(self.seed), \(self.count) agents: \(text)")
        }

        mutating func run(totals: inout Totals) {
            var participants = Array(0..<self.count)
            for runNumber in 0..<2 {
                totals.runs += 1
                if runNumber == 1 { totals.secondRuns += 1 }
                // Invariant: no run starts before every agent acknowledged closing the last one.
                for i in participants {
                    self.check(self.holding[i] == nil, "run r\(runNumber) begins while agent \(i) still holds \(self.holding[i] ?? "")")
                }
                let keep = self.rng.next() % 2 == 0
                var machine = RunStateMachine(request: RunLifecycleTests.request("r\(runNumber)", keep: keep),
                                              agents: self.agents, participants: participants, timing: self.timing)
                var outcome = Outcome()
                self.apply(machine.begin(nowNanos: self.now), outcome: &outcome)
                totals.steps += self.drive(&machine, runID: "r\(runNumber)", outcome: &outcome)
                if self.failed { return }
                // Invariant: a run ends in exactly one status.
                self.check(outcome.done == 1, "done was announced \(outcome.done) times")
                switch machine.outcome {
                case .ran(let aggregate, _)?:
                    totals.ran += 1
                    _ = aggregate.status
                    // Invariant: every interval received before a loss is counted once (and none after).
                    for i in 0..<self.count {
                        for phase in [Phase.main, .cleanup] {
                            self.check(aggregate.agents[i].ops(phase) == outcome.counted[i][phase] ?? 0,
                                       "agent \(i) \(phase): the aggregate has \(aggregate.agents[i].ops(phase)) ops, \(outcome.counted[i][phase] ?? 0) were delivered")
                        }
                    }
                case .refused?:
                    totals.refused += 1
                case nil:
                    self.check(false, "the run ended without an outcome")
                }
                totals.lost += machine.agentStages.filter { $0 == .lost || $0 == .gone }.count
                // The next run goes to every agent still connected and not dropped, as the session's does.
                participants = machine.agentStages.indices.filter {
                    self.sims[$0].connected && ![.lost, .gone, .absent].contains(machine.agentStages[$0])
                }
                if participants.isEmpty { return }
            }
        }

        struct Outcome {
            var done = 0
            var counted: [[Phase: UInt64]] = Array(repeating: [:], count: 5)
        }

        mutating func apply(_ actions: [RunStateMachine.Action], outcome: inout Outcome) {
            for action in actions {
                switch action {
                case .send(let i, let message):
                    if case .prepare = message {
                        // Invariant: no agent is sent a prepare while it holds another run.
                        self.check(self.holding[i] == nil, "agent \(i) was sent a prepare while holding \(self.holding[i] ?? "")")
                    }
                    if self.sims[i].connected { self.sims[i].inbound.append(message) }
                case .drop(let i):
                    self.disconnect(i)
                case .done:
                    outcome.done += 1
                case .startRecording, .recordInterval, .phaseStarted, .agentLost, .progress, .note:
                    break
                }
            }
        }

        mutating func disconnect(_ i: Int) {
            guard self.sims[i].connected else { return }
            self.sims[i].connected = false
            self.sims[i].inbound.removeAll()
            self.sims[i].outbound.removeAll()
            self.agentDoes(i, self.sims[i].machine.handle(.connectionClosed, nowNanos: self.now))
        }

        mutating func agentDoes(_ i: Int, _ actions: [AgentSessionStateMachine.Action]) {
            for action in actions { self.carryOut(action, agent: i) }
        }

        /// Steps until the run is done; returns how many it took.
        mutating func drive(_ machine: inout RunStateMachine, runID: String, outcome: inout Outcome) -> Int {
            var recordingAsked = false
            var steps = 0
            while machine.stage != .done, !self.failed {
                steps += 1
                guard steps < 50_000 else {
                    self.check(false, "run \(runID) did not end: stage \(machine.stage), agents \(machine.agentStages)")
                    return steps
                }
                if machine.stage == .recording, !recordingAsked {
                    recordingAsked = true
                    let event: RunStateMachine.Event = self.rng.next() % 100 == 0 ? .recorderFailed(LoadgenError(.store, "full")) : .recorderStarted
                    self.apply(machine.handle(event, nowNanos: self.now), outcome: &outcome)
                    continue
                }
                // The moves that can happen now: a delivery either way on a connection, a step of a fake run.
                var moves: [(kind: UInt64, agent: Int)] = []
                for j in 0..<self.count {
                    if self.sims[j].connected, !self.sims[j].inbound.isEmpty { moves.append((0, j)) }
                    if self.sims[j].connected, !self.sims[j].silent, !self.sims[j].outbound.isEmpty { moves.append((1, j)) }
                    if let run = self.sims[j].run, !run.outbox.isEmpty || run.willEnd { moves.append((2, j)) }
                }
                let i = Int(self.rng.next() % UInt64(self.count))
                var roll = self.rng.next() % 1000
                if roll < 850, moves.isEmpty { roll = 850 }
                if roll < 850 {
                    let move = moves[Int(self.rng.next() % UInt64(moves.count))]
                    self.step(move.agent, move.kind, &machine, runID: runID, outcome: &outcome)
                    continue
                }
                switch roll {
                case 850..<990:
                    // Time passes: the coordinator's heartbeats go out, both sides tick.
                    self.now += 100 + self.rng.next() % 300
                    for j in 0..<self.count where self.sims[j].connected {
                        self.sims[j].inbound.append(.heartbeat(.init(seq: Int(self.now))))
                    }
                    self.apply(machine.handle(.tick, nowNanos: self.now), outcome: &outcome)
                    for j in 0..<self.count {
                        self.agentDoes(j, self.sims[j].machine.handle(.tick, nowNanos: self.now))
                    }
                case 990..<994:
                    // The connection breaks: both ends see it.
                    guard self.sims[i].connected, self.rng.next() % 3 == 0 else { continue }
                    self.disconnect(i)
                    self.apply(machine.handle(.closed(i), nowNanos: self.now), outcome: &outcome)
                case 994..<997:
                    if self.rng.next() % 3 == 0 { self.sims[i].silent = true }
                default:
                    if self.rng.next() % 4 == 0 { self.apply(machine.handle(.interrupt, nowNanos: self.now), outcome: &outcome) }
                }
            }
            return steps
        }

        mutating func step(_ i: Int, _ kind: UInt64, _ machine: inout RunStateMachine, runID: String, outcome: inout Outcome) {
            switch kind {
            case 0:
                // Coordinator → agent i.
                let message = self.sims[i].inbound.removeFirst()
                self.agentDoes(i, self.sims[i].machine.handle(.received(message), nowNanos: self.now))
            case 1:
                // Agent i → coordinator.
                let message = self.sims[i].outbound.removeFirst()
                if case .interval(let interval) = message, interval.runID == runID {
                    switch machine.agentStages[i] {
                    case .running, .phaseDone, .finishing: outcome.counted[i][interval.phase, default: 0] += interval.ops
                    default: break
                    }
                }
                self.apply(machine.handle(.message(i, message), nowNanos: self.now), outcome: &outcome)
            default:
                // Agent i's run takes a step.
                guard var run = self.sims[i].run else { return }
                if !run.outbox.isEmpty {
                    let message = run.outbox.removeFirst()
                    self.sims[i].run = run
                    self.agentDoes(i, self.sims[i].machine.handle(.runEmitted(message), nowNanos: self.now))
                } else if run.willEnd {
                    self.sims[i].run = nil
                    self.holding[i] = nil
                    self.agentDoes(i, self.sims[i].machine.handle(.runEnded(run.runID), nowNanos: self.now))
                }
            }
        }

        /// Carries out an agent machine's action on the simulated agent: its fake run and its connection.
        mutating func carryOut(_ action: AgentSessionStateMachine.Action, agent i: Int) {
            switch action {
            case .send(let message):
                if self.sims[i].connected { self.sims[i].outbound.append(message) }
            case .sendAndClose(let message):
                self.check(false, "agent \(i) failed the connection: \(message)")
            case .close:
                self.check(false, "agent \(i) closed the connection")
            case .clean:
                self.check(false, "agent \(i) was asked to clean, which the simulation never does")
            case .pong:
                break
            case .answerHeartbeat(let beat):
                if self.sims[i].connected { self.sims[i].outbound.append(.heartbeat(beat)) }
            case .prepare(let request):
                // The real session claims the slot here; the simulation checks it is free.
                self.check(self.holding[i] == nil && self.sims[i].run == nil, "agent \(i) started run \(request.runID) while holding \(self.holding[i] ?? "")")
                self.holding[i] = request.runID
                var run = FakeRun(runID: request.runID)
                if self.rng.next() % 12 == 0 {
                    run.outbox = [.refused(.init(runID: request.runID, code: .policy, message: "no"))]
                    run.willEnd = true
                } else {
                    run.outbox = [.prepared(.init(runID: request.runID, runDirectory: nil))]
                }
                self.sims[i].run = run
            case .startPhase(let id, let phase, _):
                guard var run = self.sims[i].run, run.runID == id else { return }
                if run.stopped {
                    run.outbox.append(RunLifecycleTests.phaseDone(id, phase, ops: 0, status: .aborted))
                } else {
                    let intervals = Int(self.rng.next() % 4)
                    var total: UInt64 = 0
                    for seq in 0..<intervals {
                        let ops = 1 + Int(self.rng.next() % 5)
                        total += UInt64(ops)
                        run.outbox.append(RunLifecycleTests.interval(id, phase, seq: seq, ops: ops))
                    }
                    run.outbox.append(RunLifecycleTests.phaseDone(id, phase, ops: total))
                }
                self.sims[i].run = run
            case .finishRun(let id):
                guard var run = self.sims[i].run, run.runID == id, !run.willEnd else { return }
                run.outbox.append(.finished(.init(runID: id, message: nil)))
                run.willEnd = true
                self.sims[i].run = run
            case .stopRun(let id, _):
                guard var run = self.sims[i].run, run.runID == id else { return }
                run.stopped = true
                // Stopping cuts a running phase short: its remaining intervals are never sent, it ends aborted.
                if let done = run.outbox.firstIndex(where: { if case .phaseDone = $0 { true } else { false } }),
                   case .phaseDone(let d) = run.outbox[done] {
                    run.outbox.removeSubrange(0...done)
                    run.outbox.insert(RunLifecycleTests.phaseDone(id, d.phase, ops: 0, status: .aborted), at: 0)
                }
                self.sims[i].run = run
            }
        }
    }
}
