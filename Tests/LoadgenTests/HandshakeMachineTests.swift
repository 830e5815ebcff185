import Testing
@testable import LoadgenCore

/// The coordinator's handshake with N agents as a pure state machine: every transition, each refusal with its
/// sentence, and both deadlines, without sockets.
struct HandshakeMachineTests {
    typealias Machine = CoordinatorHandshakeStateMachine
    typealias FakeProver = RunLifecycleTests.FakeProver

    static let nonces = [String(repeating: "a1", count: 32), String(repeating: "b2", count: 32)]
    static let agentNonces = [String(repeating: "c3", count: 32), String(repeating: "d4", count: 32)]

    static func machine(agents: Int = 2, prover: (any SecretProver)? = FakeProver()) -> Machine {
        Machine(addresses: (0..<agents).map { "h\($0):7420" }, loadgenVersion: "test", coordinatorHost: "c", prover: prover,
                nonces: Array(Self.nonces.prefix(agents)), handshakeTimeoutNanos: 1_000)
    }

    static func welcome(_ index: Int, id: String? = nil, version: Int = WireMessage.protocolVersion, auth: Bool = true,
                        proof: String? = nil, nonce: String? = nil) -> WireMessage {
        let agentNonce = nonce ?? Self.agentNonces[index]
        return .welcome(.init(protocolVersion: version, loadgenVersion: "test", agentID: id ?? "agent\(index)", host: "host\(index)",
                              cores: 2, nonce: agentNonce, authRequired: auth,
                              proof: auth ? (proof ?? FakeProver().proof(label: Handshake.agentLabel, first: Self.nonces[index],
                                                                         second: agentNonce)) : nil))
    }

    static let ready = WireMessage.ready(.init(policy: RunLifecycleTests.policy, openFileLimit: 4096))

    static func failure(_ actions: [Machine.Action]) -> LoadgenError? {
        for case .fail(let error) in actions { return error }
        return nil
    }

    /// Drives a machine through hello, welcome, auth and ready for every agent; returns the ping actions.
    static func handshake(_ m: inout Machine, ids: [String]? = nil) -> [Machine.Action] {
        _ = m.start(nowNanos: 0)
        var last: [Machine.Action] = []
        for index in m.addresses.indices {
            _ = m.handle(.message(index, Self.welcome(index, id: ids?[index])), nowNanos: 10, wallNanos: 0)
        }
        for index in m.addresses.indices {
            last = m.handle(.message(index, Self.ready), nowNanos: 20, wallNanos: 1_000_000)
        }
        return last
    }

    @Test func helloWelcomeAuthReadyThenThreeRoundsOfPings() {
        var m = Self.machine()
        let hellos = m.start(nowNanos: 0)
        #expect(hellos.count == 2)
        guard case .send(0, .hello(let hello)) = hellos[0] else { Issue.record("no hello: \(hellos)"); return }
        #expect(hello.nonce == Self.nonces[0])
        #expect(m.stage == .handshaking(deadlineNanos: 1_000))

        let auth = m.handle(.message(0, Self.welcome(0)), nowNanos: 5, wallNanos: 0)
        let expected = FakeProver().proof(label: Handshake.coordinatorLabel, first: Self.agentNonces[0], second: Self.nonces[0])
        #expect(auth == [.send(0, .auth(.init(proof: expected)))])
        guard case .awaitingReady = m.agents[0] else { Issue.record("\(m.agents[0])"); return }
        // A heartbeat from an agent that is further along changes nothing.
        #expect(m.handle(.message(0, .heartbeat(.init(seq: 1))), nowNanos: 6, wallNanos: 0).isEmpty)
        #expect(m.handle(.message(0, Self.ready), nowNanos: 7, wallNanos: 0) == [.authenticated(0)])
        _ = m.handle(.message(1, Self.welcome(1)), nowNanos: 8, wallNanos: 0)
        let pings = m.handle(.message(1, Self.ready), nowNanos: 9, wallNanos: 500)
        #expect(pings.first == .authenticated(1))
        #expect(pings.dropFirst() == [.send(0, .ping(.init(seq: 0, sentNanos: 9))), .send(1, .ping(.init(seq: 1, sentNanos: 9)))])
        #expect(m.stage == .pinging(round: 0, answered: 0, deadlineNanos: 9 + 1_000))

        // Round trips of 20, 8 and 12 ns for agent 0: the shortest is kept, with the offset measured at it.
        var now: UInt64 = 9
        for (round, rtt) in [(0, UInt64(20)), (1, 8), (2, 12)] {
            let sent = now
            now += rtt
            #expect(m.handle(.message(0, .pong(.init(seq: round * 2, sentNanos: sent, agentWallNanos: 10_000))),
                             nowNanos: now, wallNanos: 0).isEmpty)
            let next = m.handle(.message(1, .pong(.init(seq: round * 2 + 1, sentNanos: sent, agentWallNanos: 10_000))),
                                nowNanos: now, wallNanos: 500)
            if round < 2 {
                #expect(next == [.send(0, .ping(.init(seq: (round + 1) * 2, sentNanos: now))),
                                 .send(1, .ping(.init(seq: (round + 1) * 2 + 1, sentNanos: now)))])
            } else {
                guard case .connected(let agents)? = next.first else { Issue.record("not connected: \(next)"); return }
                #expect(agents.map(\.agentID) == ["agent0", "agent1"])
                #expect(agents[0].rttNanos == 8)
                #expect(agents[0].clockOffsetNanos == 10_000 - (500 + 4))
                #expect(agents[0].openFileLimit == 4096)
                #expect(agents[0].host == "host0")
            }
        }
        #expect(m.stage == .connected)
        // After the end, nothing more comes out.
        #expect(m.handle(.tick, nowNanos: 1_000_000, wallNanos: 0).isEmpty)
    }

    @Test func anAgentWithoutASecretNeedsNoProof() {
        var m = Self.machine(agents: 1, prover: nil)
        _ = m.start(nowNanos: 0)
        #expect(m.handle(.message(0, Self.welcome(0, auth: false)), nowNanos: 1, wallNanos: 0) == [.send(0, .auth(.init(proof: nil)))])
    }

    @Test(arguments: [
        (HandshakeMachineTests.welcome(0, version: 99), "speaks loadgen protocol version 99; this coordinator speaks version \(WireMessage.protocolVersion)"),
        (HandshakeMachineTests.welcome(0, proof: String(repeating: "0", count: 64)), "did not prove it holds this coordinator's secret"),
        (HandshakeMachineTests.welcome(0, nonce: "short"), "sent a malformed nonce"),
        (WireMessage.failure(.init(code: .authentication, message: "The coordinator did not prove it holds this agent's secret.")),
         "refused the connection: The coordinator did not prove"),
        (WireMessage.prepared(.init(runID: "r", runDirectory: nil)), "sent prepared during the handshake"),
    ])
    func aBadWelcomeOrAStrayMessageFailsNamingTheAgent(message: WireMessage, words: String) {
        var m = Self.machine(agents: 1)
        _ = m.start(nowNanos: 0)
        let error = Self.failure(m.handle(.message(0, message), nowNanos: 1, wallNanos: 0))
        #expect(error?.message.contains("h0:7420") == true, "\(String(describing: error))")
        #expect(error?.message.contains(words) == true, "\(String(describing: error))")
        #expect(m.stage == .failed)
        #expect(m.handle(.message(0, Self.ready), nowNanos: 2, wallNanos: 0).isEmpty)
    }

    @Test func aSecretTheCoordinatorLacksIsNamed() {
        var m = Self.machine(agents: 1, prover: nil)
        _ = m.start(nowNanos: 0)
        let error = Self.failure(m.handle(.message(0, Self.welcome(0)), nowNanos: 1, wallNanos: 0))
        #expect(error?.message == "Agent h0:7420 requires a shared secret: give the coordinator --secret-file.")
    }

    @Test func theHandshakeDeadlineNamesTheSlowAgent() {
        var m = Self.machine()
        _ = m.start(nowNanos: 0)
        _ = m.handle(.message(0, Self.welcome(0)), nowNanos: 1, wallNanos: 0)
        _ = m.handle(.message(0, Self.ready), nowNanos: 2, wallNanos: 0)
        #expect(m.handle(.tick, nowNanos: 1_000, wallNanos: 0).isEmpty)
        let error = Self.failure(m.handle(.tick, nowNanos: 1_001, wallNanos: 0))
        #expect(error?.code == .unreachable)
        #expect(error?.message.hasPrefix("Agent h1:7420 did not finish the handshake within") == true, "\(String(describing: error))")
    }

    @Test func thePingDeadlineNamesTheSilentAgentAndAStrayPongIsAnError() {
        var m = Self.machine()
        _ = Self.handshake(&m)
        _ = m.handle(.message(1, .pong(.init(seq: 1, sentNanos: 20, agentWallNanos: 0))), nowNanos: 30, wallNanos: 0)
        #expect(m.handle(.tick, nowNanos: 20 + 1_000, wallNanos: 0).isEmpty)
        let error = Self.failure(m.handle(.tick, nowNanos: 20 + 1_001, wallNanos: 0))
        #expect(error?.message.hasPrefix("Agent h0:7420 did not answer its round-trip pings") == true, "\(String(describing: error))")

        var n = Self.machine()
        _ = Self.handshake(&n)
        let stray = Self.failure(n.handle(.message(0, .pong(.init(seq: 5, sentNanos: 0, agentWallNanos: 0))), nowNanos: 30, wallNanos: 0))
        #expect(stray?.code == .protocolViolation)
        var o = Self.machine()
        _ = Self.handshake(&o)
        let other = Self.failure(o.handle(.message(0, .closed(.init(runID: "r"))), nowNanos: 30, wallNanos: 0))
        #expect(other?.message == "Agent h0:7420 sent closed instead of pong.")
    }

    @Test func aCloseInAnyStateFailsWithTheLinksReason() {
        for step in 0..<3 {
            var m = Self.machine(agents: 1)
            _ = m.start(nowNanos: 0)
            if step >= 1 { _ = m.handle(.message(0, Self.welcome(0)), nowNanos: 1, wallNanos: 0) }
            if step >= 2 { _ = m.handle(.message(0, Self.ready), nowNanos: 2, wallNanos: 0) }
            let reason = "its certificate is not trusted here"
            let error = Self.failure(m.handle(.closed(0, reason: step == 1 ? nil : reason), nowNanos: 3, wallNanos: 0))
            #expect(error?.code == .unreachable)
            #expect(error?.message == (step == 1 ? "Agent h0:7420 closed the connection during the handshake."
                                                 : "The connection to agent h0:7420 ended during the handshake: \(reason)."))
        }
        var m = Self.machine(agents: 1)
        _ = m.start(nowNanos: 0)
        #expect(Self.failure(m.handle(.interrupt, nowNanos: 1, wallNanos: 0))?.code == .aborted)
    }

    @Test func twoAgentsWithOneIDAreRefusedNamingIt() {
        var m = Self.machine()
        _ = Self.handshake(&m, ids: ["vm", "vm"])
        var actions: [Machine.Action] = []
        for round in 0..<Machine.pingRounds {
            for index in 0..<2 {
                actions = m.handle(.message(index, .pong(.init(seq: round * 2 + index, sentNanos: 20, agentWallNanos: 0))),
                                   nowNanos: 30, wallNanos: 0)
            }
        }
        let error = Self.failure(actions)
        #expect(error?.code == .usage)
        #expect(error?.message.contains("Two agents share the agent id 'vm'") == true)
    }
}
