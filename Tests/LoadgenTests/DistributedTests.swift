import Foundation
import Logging
import NIOCore
import NIOPosix
import Testing
@testable import LoadgenAgent
@testable import LoadgenCoordinator
@testable import LoadgenCore
@testable import LoadgenWire
@testable import LoadgenWorkloads

/// Agents on 127.0.0.1:0 in this process (and a scripted one that goes silent), driven by a real coordinator or by
/// hand over the wire.
enum LiveAgents {
    static func configuration(id: String, secret: SharedSecret?, policy: AgentPolicy, cores: Int = 2) -> AgentConfiguration {
        AgentConfiguration(agentID: id, host: "test", cores: cores, loadgenVersion: "test", policy: policy, prover: secret,
                           workerExecutable: TestSupport.binary)
    }

    /// Runs `count` agents for the duration of `body`, which gets their addresses.
    static func with<R: Sendable>(count: Int, secret: SharedSecret? = nil, policy: AgentPolicy, failureLimit: Int = 1000, failureWindowNanos: UInt64 = 1_000_000_000,
                                  maxPending: Int = 32, earlyDropStart: Int? = nil, tls: ControlTLS? = nil, id: String? = nil, idIncludesPort: Bool = false,
                                  observers: [any AgentRunObserver] = [], cores: Int = 2,
                                  _ body: @Sendable ([AgentAddress]) async throws -> R) async throws -> R {
        let ports = Locked<[Int: Int]>([:])
        var logger = Logger(label: "test.agent")
        logger.logLevel = .critical
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<count {
                var configuration = Self.configuration(id: id ?? "agent\(index)", secret: secret, policy: policy, cores: cores)
                configuration.runObserver = index < observers.count ? observers[index] : nil
                var server = AgentServer(configuration: configuration, host: "127.0.0.1", port: 0, logger: logger)
                server.idIncludesPort = idIncludesPort
                server.maxFailedHandshakes = failureLimit
                server.maxPendingConnections = maxPending
                server.earlyDropStart = earlyDropStart
                server.failedHandshakeWindowNanos = failureWindowNanos
                server.tls = tls
                group.addTask {
                    try await server.run { address, _ in ports.withLock { $0[index] = address.port } }
                }
            }
            let deadline = Date().addingTimeInterval(10)
            while ports.value.count < count, Date() < deadline { try await Task.sleep(for: .milliseconds(5)) }
            let addresses = (0..<count).map { AgentAddress(host: "127.0.0.1", port: ports.value[$0]!) }
            do {
                let result = try await body(addresses)
                group.cancelAll()
                return result
            } catch {
                group.cancelAll()
                throw error
            }
        }
    }

    /// Waits for the next inbound message (skipping heartbeats), or nil when the link closed or time ran out.
    static func next(_ iterator: inout AsyncStream<WireMessage>.Iterator, within seconds: Double = 5) async -> WireMessage? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let message = await iterator.next()
            guard let message else { return nil }
            if case .heartbeat = message { continue }
            return message
        }
        return nil
    }
}

/// A scripted agent: a correct handshake, prepared, one interval after start, then silence on an open connection.
enum SilentAgent {
    static func with<R: Sendable>(_ body: @Sendable (AgentAddress) async throws -> R) async throws -> R {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addWireCodec()
                    return try NIOAsyncChannel<WireMessage, WireMessage>(wrappingChannelSynchronously: channel)
                }
            }
        let port = server.channel.localAddress!.port!
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        try await connection.executeThenClose { messages, outbound in
                            var silent = false
                            for try await message in messages where !silent {
                                switch message {
                                case .hello:
                                    try await outbound.write(.welcome(.init(loadgenVersion: "test", agentID: "silent", host: "test",
                                                                            cores: 1, nonce: Handshake.makeNonce(),
                                                                            authRequired: false, proof: nil)))
                                case .auth:
                                    try await outbound.write(.ready(.init(policy: AgentPolicy.embedded.summary)))
                                case .ping(let ping):
                                    try await outbound.write(.pong(.init(seq: ping.seq, sentNanos: ping.sentNanos, agentWallNanos: 0)))
                                case .heartbeat(let beat):
                                    try await outbound.write(.heartbeat(beat))
                                case .prepare(let prepare):
                                    try await outbound.write(.prepared(.init(runID: prepare.request.runID, runDirectory: nil)))
                                case .start(let start):
                                    var tally = Tally()
                                    tally.ops = 7
                                    for _ in 0..<7 { tally.recordLatency(1000) }
                                    try await outbound.write(.interval(.init(runID: start.runID, phase: .main, seq: 1,
                                                                             elapsedNanos: 1000, tally: tally)))
                                    silent = true
                                default:
                                    break
                                }
                            }
                            // Silent: hold the connection open without a word until the test ends.
                            try await Task.sleep(for: .seconds(60))
                        }
                    }
                }
            }
            let result = try await body(AgentAddress(host: "127.0.0.1", port: port))
            group.cancelAll()
            return result
        }
    }
}

struct NullObserver: RunObserver {
    func phaseStarted(_ request: RunRequest, phase: Phase, agents: [ConnectedAgent]) {}
    func progress(_ snapshot: ProgressSnapshot) {}
    func agentLost(_ agent: ConnectedAgent, message: String) {}
    func note(_ message: String) {}
}

@Suite(.timeLimit(.minutes(2)))
struct DistributedTests {
    static let secret = SharedSecret(bytes: Array("0123456789abcdef0123456789abcdef".utf8))

    static func coordinator(_ secret: SharedSecret? = DistributedTests.secret) -> CoordinatorConfiguration {
        CoordinatorConfiguration(loadgenVersion: "test", host: "test", prover: secret, startDelayNanos: 50_000_000)
    }

    static func writeRequest(_ root: String, files: Int = 150, keep: Bool = true, mode: ExecutionMode = .threads) -> RunRequest {
        RunRequest(runID: "d-\(UUID().uuidString.prefix(8))", write: WriteSpec(target: root, files: files, keep: keep),
                   mode: mode, workers: 2, seed: 3)
    }

    @Test func aRunsTotalsAreTheSumOfItsAgents() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let outcome = try await LiveAgents.with(count: 3, secret: Self.secret, policy: AgentPolicy(allowedRoots: [root])) { addresses in
            try await RemoteAgentLink.with(addresses: addresses) { links in
                try await CoordinatorSession.with(links: links, configuration: Self.coordinator()) { session throws(LoadgenError) in
                    let agents = try await session.connect()
                    #expect(agents.map(\.agentID) == ["agent0", "agent1", "agent2"])
                    return try await session.run(Self.writeRequest(root), observer: NullObserver(), recorder: nil)
                }
            }
        }
        let report = outcome.report
        #expect(report.status == .completed)
        #expect(report.agents == 3)
        #expect(report.ops == 450)
        #expect(report.perAgent.map(\.ops) == [150, 150, 150])
        #expect(report.perAgent.reduce(0) { $0 + $1.bytes } == report.bytes)
        // Cluster latency is the merged histogram: its count is every agent's.
        #expect(outcome.aggregate.clusterTally(.main).latency.totalCount == 450)
        // Each agent wrote into a directory of its own.
        let dirs = try FileManager.default.contentsOfDirectory(atPath: root).sorted()
        #expect(dirs.count == 3)
        for dir in dirs { #expect(TestSupport.files(under: root + "/" + dir).count == 150) }
    }

    /// Two agents on one host without --id: each takes the host name and its port, so both join the run; the same
    /// id given explicitly to both is still refused.
    @Test func agentsOnOneHostNeedNoIDButAnExplicitDuplicateIsRefused() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let policy = AgentPolicy(allowedRoots: [root])
        let ids = try await LiveAgents.with(count: 2, secret: Self.secret, policy: policy, id: "samehost", idIncludesPort: true) { addresses in
            try await RemoteAgentLink.with(addresses: addresses) { links in
                try await CoordinatorSession.with(links: links, configuration: Self.coordinator()) { session throws(LoadgenError) in
                    let agents = try await session.connect()
                    let outcome = try await session.run(Self.writeRequest(root, files: 20), observer: NullObserver(), recorder: nil)
                    #expect(outcome.report.status == .completed)
                    #expect(outcome.report.ops == 40)
                    return zip(agents, addresses).map { agent, address in (agent.agentID, "samehost-\(address.port)") }
                }
            }
        }
        for (got, expected) in ids { #expect(got == expected) }
        let server = AgentServer(configuration: LiveAgents.configuration(id: "h", secret: nil, policy: policy),
                                 host: "127.0.0.1", port: 7420, logger: Logger(label: "t"))
        #expect(server.agentID(onPort: 7421) == "h", "an explicit id is kept as given")
        var defaulted = server
        defaulted.idIncludesPort = true
        #expect(defaulted.agentID(onPort: 7420) == "h", "the default port keeps the bare host name")
        #expect(defaulted.agentID(onPort: 7421) == "h-7421")

        await #expect(throws: LoadgenError.self) {
            try await LiveAgents.with(count: 2, secret: Self.secret, policy: policy, id: "twin") { addresses in
                try await RemoteAgentLink.with(addresses: addresses) { links in
                    try await CoordinatorSession.with(links: links, configuration: Self.coordinator()) { session throws(LoadgenError) in
                        do throws(LoadgenError) {
                            _ = try await session.connect()
                        } catch {
                            #expect(error.message.contains("Two agents share the agent id 'twin'"))
                            throw error
                        }
                    }
                }
            }
        }
    }

    @Test func everyMessageBeforeAuthenticationIsRefused() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let kinds = WireSchemaTests.samples.filter { $0.kind != .hello }
        try await LiveAgents.with(count: 1, secret: Self.secret, policy: AgentPolicy(allowedRoots: [root])) { addresses in
            for message in kinds {
                // Sent first, and sent after hello but before auth: both refused, and the connection closed.
                for afterHello in [false, true] {
                    try await RemoteAgentLink.with(addresses: addresses) { links in
                        var inbound = links[0].inbound.makeAsyncIterator()
                        if afterHello {
                            _ = await links[0].send(.hello(.init(loadgenVersion: "t", coordinatorHost: "t", nonce: Handshake.makeNonce())))
                            guard case .welcome? = await LiveAgents.next(&inbound) else {
                                Issue.record("no welcome")
                                return
                            }
                        }
                        if case .auth = message, afterHello { return }  // auth after hello is the handshake itself
                        _ = await links[0].send(message)
                        let reply = await LiveAgents.next(&inbound)
                        guard case .failure(let failure)? = reply else {
                            Issue.record("\(message.kind.rawValue) (after hello: \(afterHello)) was answered with \(String(describing: reply))")
                            return
                        }
                        #expect(failure.code == .authentication)
                        #expect(await LiveAgents.next(&inbound) == nil, "the connection stayed open")
                    }
                }
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty)
    }

    @Test func aWrongOrMissingSecretIsRefusedAndNothingRuns() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let other = SharedSecret(bytes: Array("fedcba9876543210fedcba9876543210".utf8))
        try await LiveAgents.with(count: 1, secret: Self.secret, policy: AgentPolicy(allowedRoots: [root])) { addresses in
            for (prover, words) in [(other as SharedSecret?, "did not prove"), (nil, "requires a shared secret")] {
                do {
                    try await RemoteAgentLink.with(addresses: addresses) { links in
                        try await CoordinatorSession.with(links: links, configuration: Self.coordinator(prover)) { session throws(LoadgenError) in
                            _ = try await session.connect()
                            _ = try await session.run(Self.writeRequest(root), observer: NullObserver(), recorder: nil)
                        }
                    }
                    Issue.record("connected with \(words)")
                } catch let error as LoadgenError {
                    #expect(error.code == .authentication)
                    #expect(error.isRefusal)
                    #expect(error.message.contains(words), "\(error.message)")
                }
            }
            // A coordinator that proves nothing cannot fake the agent's side either: a raw auth with a bad proof.
            try await RemoteAgentLink.with(addresses: addresses) { links in
                var inbound = links[0].inbound.makeAsyncIterator()
                _ = await links[0].send(.hello(.init(loadgenVersion: "t", coordinatorHost: "t", nonce: Handshake.makeNonce())))
                _ = await LiveAgents.next(&inbound)
                _ = await links[0].send(.auth(.init(proof: String(repeating: "0", count: 64))))
                guard case .failure? = await LiveAgents.next(&inbound) else {
                    Issue.record("a bad proof was accepted")
                    return
                }
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty)
    }

    @Test func repeatedFailedHandshakesFromOneSourceAreCutOff() async throws {
        try await LiveAgents.with(count: 1, secret: Self.secret, policy: AgentPolicy(allowedRoots: nil), failureLimit: 5,
                                     failureWindowNanos: 60_000_000_000) { addresses in
            var answered: [Bool] = []
            for _ in 0..<8 {
                let gotWelcome = try await RemoteAgentLink.with(addresses: addresses) { links in
                    var inbound = links[0].inbound.makeAsyncIterator()
                    _ = await links[0].send(.hello(.init(loadgenVersion: "t", coordinatorHost: "t", nonce: Handshake.makeNonce())))
                    guard case .welcome? = await LiveAgents.next(&inbound, within: 2) else { return false }
                    _ = await links[0].send(.auth(.init(proof: String(repeating: "0", count: 64))))
                    _ = await LiveAgents.next(&inbound, within: 2)
                    return true
                }
                answered.append(gotWelcome)
            }
            // The first five wrong proofs are answered; after them the source is refused before any handshake.
            #expect(Array(answered.prefix(5)) == Array(repeating: true, count: 5))
            #expect(answered.last == false, "\(answered)")
        }
    }

    /// A coordinator connecting with this secret (nil: none) and no TLS; the refusal it met, if any.
    static func connectError(_ addresses: [AgentAddress], secret: SharedSecret?) async -> LoadgenError? {
        do {
            try await RemoteAgentLink.with(addresses: addresses) { links in
                try await CoordinatorSession.with(links: links, configuration: Self.coordinator(secret)) { session throws(LoadgenError) in
                    _ = try await session.connect()
                }
            }
            return nil
        } catch {
            return error as? LoadgenError ?? LoadgenError.io("\(error)")
        }
    }

    /// A blocked address and a full handshake queue each get their own sentence (TLS expected has its own too:
    /// ControlTLSTests).
    @Test func eachRefusalOfAConnectionSaysWhy() async throws {
        try await LiveAgents.with(count: 1, secret: Self.secret, policy: AgentPolicy(allowedRoots: nil), failureLimit: 1,
                                  failureWindowNanos: 60_000_000_000) { addresses in
            let wrong = await Self.connectError(addresses, secret: SharedSecret(bytes: Array("another secret of 32 bytes......".utf8)))
            #expect(wrong?.message.contains("did not prove it holds this coordinator's secret") == true, "\(String(describing: wrong))")
            // The agent counts the failure when it sees the refused coordinator's connection close.
            try await Task.sleep(for: .milliseconds(300))
            let blocked = await Self.connectError(addresses, secret: Self.secret)
            #expect(blocked?.code == .unreachable)
            #expect(blocked?.message.contains("refuses 127.0.0.1 for now: 1 handshake from it failed within 1.0m") == true,
                    "\(String(describing: blocked))")
        }
        try await LiveAgents.with(count: 1, secret: Self.secret, policy: AgentPolicy(allowedRoots: nil), maxPending: 2,
                                  earlyDropStart: 2) { addresses in
            // Two connections that never say hello fill the agent's handshake queue (no random early drop here).
            let silent = (0..<2).map { _ in Self.rawConnect(port: addresses[0].port) }
            defer { for fd in silent { close(fd) } }
            #expect(silent.allSatisfy { $0 >= 0 })
            try await Task.sleep(for: .milliseconds(100))
            let full = await Self.connectError(addresses, secret: Self.secret)
            #expect(full?.code == .unreachable)
            #expect(full?.message.contains("has 2 connections still in their handshake, its limit") == true, "\(String(describing: full))")
        }
    }

    /// The first frame a refused raw connection is sent, decoded (nil if none comes within two seconds).
    static func firstFrame(_ fd: Int32) -> WireMessage? {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var decoder = FrameDecoder()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { return nil }
            buffer.withUnsafeBytes { decoder.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            if let message = try? decoder.nextMessage() { return message }
        }
    }

    /// One address holding a hundred silent connections: past its share it is refused with a sentence, and a
    /// coordinator from another address is served at once.
    @Test func aFloodFromOneAddressLeavesRoomForACoordinatorElsewhere() async throws {
        try await LiveAgents.with(count: 1, secret: Self.secret, policy: AgentPolicy(allowedRoots: nil)) { addresses in
            let flood = (0..<100).map { _ in Self.rawConnect(port: addresses[0].port, from: "127.0.0.2") }
            defer { for fd in flood where fd >= 0 { close(fd) } }
            #expect(flood.allSatisfy { $0 >= 0 })
            // The last of them was refused (8 at most are pending from one address), and told why.
            guard case .failure(let refusal)? = Self.firstFrame(flood[99]) else {
                Issue.record("the 100th silent connection was not refused with a sentence")
                return
            }
            #expect(refusal.message.contains("connections from 127.0.0.2 still in their handshake, the most it takes from one address"),
                    "\(refusal.message)")
            let started = MonotonicClock.nowNanos()
            let error = await Self.connectError(addresses, secret: Self.secret)
            #expect(error == nil, "\(String(describing: error))")
            #expect(MonotonicClock.nowNanos() - started < 2_000_000_000, "the coordinator waited behind the flood")
        }
    }

    /// Load balancers' health probes (a TCP connect that closes at once) are not failed handshakes: they never get
    /// the prober's address blocked.
    @Test func healthProbesDoNotCountAsFailedHandshakes() async throws {
        try await LiveAgents.with(count: 1, secret: Self.secret, policy: AgentPolicy(allowedRoots: nil), failureLimit: 2,
                                  failureWindowNanos: 60_000_000_000) { addresses in
            for _ in 0..<6 {
                let fd = Self.rawConnect(port: addresses[0].port)
                #expect(fd >= 0)
                // Long enough for the agent to accept it and see where it came from, as a prober's would be.
                try await Task.sleep(for: .milliseconds(30))
                close(fd)
            }
            try await Task.sleep(for: .milliseconds(200))
            let error = await Self.connectError(addresses, secret: Self.secret)
            #expect(error == nil, "\(String(describing: error))")
        }
    }

    /// A TCP connection to 127.0.0.1:port, from `source` (another loopback address), that sends nothing (-1 when
    /// it cannot connect).
    static func rawConnect(port: Int, from source: String? = nil) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return -1 }
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard bound == 0 else {
                close(fd)
                return -1
            }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if result != 0 {
            close(fd)
            return -1
        }
        return fd
    }

    /// Version 3 is the last JSON-only protocol: its coordinators still get a sentence (in a JSON error frame, which
    /// they can decode), not a binary frame they cannot.
    @Test(arguments: [3, 99])
    func aVersionMismatchIsRefusedNamingBothVersions(version: Int) async throws {
        try await LiveAgents.with(count: 1, policy: AgentPolicy(allowedRoots: nil)) { addresses in
            try await RemoteAgentLink.with(addresses: addresses) { links in
                var inbound = links[0].inbound.makeAsyncIterator()
                _ = await links[0].send(.hello(.init(protocolVersion: version, loadgenVersion: "9", coordinatorHost: "t",
                                                     nonce: Handshake.makeNonce())))
                guard case .failure(let failure)? = await LiveAgents.next(&inbound) else {
                    Issue.record("version \(version) was accepted")
                    return
                }
                #expect(failure.message.contains("version \(WireMessage.protocolVersion)"))
                #expect(failure.message.contains("version \(version)"))
                let frame = try FrameCodec.encode(.failure(failure))
                #expect(frame[4] == UInt8(ascii: "{"))
            }
        }
    }

    @Test func requestsBeyondTheAgentsPolicyAreRefusedNamingTheLimit() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        let outside = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root); TestSupport.remove(outside) }
        let policy = AgentPolicy(allowedRoots: [root], maxFiles: 100, maxWorkers: 4)
        try await LiveAgents.with(count: 2, secret: Self.secret, policy: policy) { addresses in
            try await RemoteAgentLink.with(addresses: addresses) { links in
                try await CoordinatorSession.with(links: links, configuration: Self.coordinator()) { session throws(LoadgenError) in
                    _ = try await session.connect()
                    let cases: [(RunRequest, String)] = [
                        (Self.writeRequest(root, files: 1000), "--max-files"),
                        (RunRequest(runID: "w8", write: WriteSpec(target: root, files: 10), mode: .threads, workers: 8, seed: 1), "--max-workers"),
                        (Self.writeRequest(outside, files: 10), "allowed roots"),
                    ]
                    for (request, words) in cases {
                        do throws(LoadgenError) {
                            _ = try await session.run(request, observer: NullObserver(), recorder: nil)
                            Issue.record("\(words) was not enforced")
                        } catch {
                            #expect(error.isRefusal)
                            #expect(error.message.contains(words), "\(error.message)")
                        }
                    }
                    // The agents still serve a request within policy.
                    let ok = try await session.run(Self.writeRequest(root, files: 20), observer: NullObserver(), recorder: nil)
                    #expect(ok.report.ops == 40)
                }
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: outside).isEmpty)
    }

    @Test func aSecondCoordinatorIsRefusedWhileARunIsPrepared() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        try await LiveAgents.with(count: 1, policy: AgentPolicy(allowedRoots: [root])) { addresses in
            try await RemoteAgentLink.with(addresses: addresses + addresses) { links in
                var first = links[0].inbound.makeAsyncIterator()
                var second = links[1].inbound.makeAsyncIterator()
                for (link, index) in [(links[0], 0), (links[1], 1)] {
                    _ = await link.send(.hello(.init(loadgenVersion: "t", coordinatorHost: "c\(index)", nonce: Handshake.makeNonce())))
                    _ = await link.send(.auth(.init(proof: nil)))
                }
                for _ in 0..<2 { _ = await LiveAgents.next(&first) }
                for _ in 0..<2 { _ = await LiveAgents.next(&second) }
                _ = await links[0].send(.prepare(.init(request: Self.writeRequest(root, files: 10))))
                guard case .prepared? = await LiveAgents.next(&first) else {
                    Issue.record("the first coordinator's run was not prepared")
                    return
                }
                _ = await links[1].send(.prepare(.init(request: Self.writeRequest(root, files: 10))))
                guard case .refused(let refused)? = await LiveAgents.next(&second) else {
                    Issue.record("the second coordinator was not refused")
                    return
                }
                #expect(refused.message.contains("busy"))
            }
        }
    }

    @Test func aSilentAgentIsMarkedLostAndTheRunEndsPartialKeepingWhatItSent() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let started = Date()
        let outcome = try await SilentAgent.with { silent in
            try await LiveAgents.with(count: 1, policy: AgentPolicy(allowedRoots: [root])) { addresses in
                try await RemoteAgentLink.with(addresses: addresses + [silent]) { links in
                    try await CoordinatorSession.with(links: links, configuration: Self.coordinator(nil)) { session throws(LoadgenError) in
                        _ = try await session.connect()
                        return try await session.run(Self.writeRequest(root, files: 100), observer: NullObserver(), recorder: nil)
                    }
                }
            }
        }
        let elapsed = Date().timeIntervalSince(started)
        let report = outcome.report
        #expect(report.status == .partial)
        #expect(report.perAgent[0].status == .completed)
        #expect(report.perAgent[0].ops == 100)
        #expect(report.perAgent[1].status == .lost)
        #expect(report.perAgent[1].ops == 7, "what the lost agent reported before it went silent is kept")
        #expect(report.ops == 107)
        // Marked lost within 3 s of its silence: the message names how long it had been silent.
        let message = try #require(report.perAgent[1].message)
        let seconds = message.components(separatedBy: "silent for ").last?.components(separatedBy: "s ").first.flatMap(Double.init)
        #expect(seconds.map { $0 >= 2 && $0 < 3 } == true, "\(message)")
        #expect(elapsed < 30, "took \(elapsed)s")
    }

    @Test func anAgentStopsItsLoadWithinTwoSecondsOfASilentCoordinator() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        try await LiveAgents.with(count: 1, policy: AgentPolicy(allowedRoots: [root])) { addresses in
            try await RemoteAgentLink.with(addresses: addresses) { links in
                let link = links[0]
                var inbound = link.inbound.makeAsyncIterator()
                _ = await link.send(.hello(.init(loadgenVersion: "t", coordinatorHost: "t", nonce: Handshake.makeNonce())))
                _ = await link.send(.auth(.init(proof: nil)))
                _ = await LiveAgents.next(&inbound)
                _ = await LiveAgents.next(&inbound)
                // A long run (bounded: 300,000 empty files at most), reporting every 100 ms.
                var request = Self.writeRequest(root, files: 300_000)
                request.intervalNanos = 100_000_000
                request.write!.size = SizeRange(exactly: 0)
                _ = await link.send(.prepare(.init(request: request)))
                guard case .prepared? = await LiveAgents.next(&inbound) else {
                    Issue.record("not prepared")
                    return
                }
                _ = await link.send(.start(.init(runID: request.runID, phase: .main, delayNanos: 0)))
                var ops: UInt64 = 0
                let lastSent = Date()  // From here on the coordinator says nothing.
                var done: WireMessage.PhaseDone?
                while done == nil, let message = await LiveAgents.next(&inbound, within: 5) {
                    switch message {
                    case .interval(let i): ops += i.ops
                    case .phaseDone(let d): done = d
                    default: break
                    }
                }
                let stoppedAfter = Date().timeIntervalSince(lastSent)
                let phase = try #require(done)
                #expect(phase.status == .aborted)
                #expect(phase.message?.contains("silent") == true)
                #expect(stoppedAfter < 2.0, "stopped after \(stoppedAfter)s")
                #expect(ops > 0 && ops < 300_000)
                // No load after the stop: the files on disk stay as they are, and equal what was reported.
                let dir = root + "/" + RunDirectory.name(runID: request.runID, agentID: "agent0")
                let counted = TestSupport.files(under: dir).count
                try await Task.sleep(for: .milliseconds(500))
                #expect(TestSupport.files(under: dir).count == counted)
                #expect(UInt64(counted) == phase.ops)
            }
        }
    }
}

/// Mutual TLS on the coordinator–agent link: a run goes through it; strangers and plain TCP do not.
@Suite(.timeLimit(.minutes(1)))
struct ControlTLSTests {
    /// A CA with agent certificates for 127.0.0.1 and (misnamed) 127.0.0.2 and a coordinator certificate, and a
    /// second CA with a certificate of its own, all made with the openssl command line.
    static func certificates(in dir: String) throws {
        for ca in ["ca", "other-ca"] {
            try TestSupport.openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "\(dir)/\(ca).key",
                     "-out", "\(dir)/\(ca).pem", "-days", "2", "-subj", "/CN=loadgen \(ca)"])
        }
        for (name, ca, san, usage) in [("agent", "ca", "IP:127.0.0.1", "serverAuth"), ("misnamed", "ca", "IP:127.0.0.2", "serverAuth"),
                                       ("coordinator", "ca", "DNS:coordinator", "clientAuth"),
                                       ("stranger", "other-ca", "DNS:stranger", "clientAuth")] {
            try "subjectAltName=\(san)\nbasicConstraints=CA:FALSE\nextendedKeyUsage=\(usage)\n"
                .write(toFile: "\(dir)/\(name).cnf", atomically: true, encoding: .utf8)
            try TestSupport.openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "\(dir)/\(name).key",
                     "-out", "\(dir)/\(name).csr", "-subj", "/CN=\(name)"])
            try TestSupport.openssl(["x509", "-req", "-in", "\(dir)/\(name).csr", "-CA", "\(dir)/\(ca).pem", "-CAkey", "\(dir)/\(ca).key",
                     "-CAcreateserial", "-out", "\(dir)/\(name).pem", "-days", "2", "-extfile", "\(dir)/\(name).cnf"])
        }
    }

    static func connect(_ addresses: [AgentAddress], tls: ControlTLS?) async -> LoadgenError? {
        do {
            try await RemoteAgentLink.with(addresses: addresses, tls: tls) { links in
                try await CoordinatorSession.with(links: links, configuration: DistributedTests.coordinator()) { session throws(LoadgenError) in
                    _ = try await session.connect()
                }
            }
            return nil
        } catch let error as LoadgenError {
            return error
        } catch {
            return LoadgenError.io("\(error)")
        }
    }

    @Test func aRunGoesThroughMutualTLSAndStrangersAndPlainLinksAreRefused() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        try Self.certificates(in: dir)
        let agentTLS = try ControlTLS.load(certificate: dir + "/agent.pem", key: dir + "/agent.key", ca: dir + "/ca.pem", server: true)
        let coordinatorTLS = try ControlTLS.load(certificate: dir + "/coordinator.pem", key: dir + "/coordinator.key",
                                                 ca: dir + "/ca.pem", server: false)
        try await LiveAgents.with(count: 2, secret: DistributedTests.secret, policy: AgentPolicy(allowedRoots: [dir]),
                                  tls: agentTLS) { addresses in
            let outcome = try await RemoteAgentLink.with(addresses: addresses, tls: coordinatorTLS) { links in
                try await CoordinatorSession.with(links: links, configuration: DistributedTests.coordinator()) { session throws(LoadgenError) in
                    _ = try await session.connect()
                    return try await session.run(DistributedTests.writeRequest(dir, files: 40), observer: NullObserver(), recorder: nil)
                }
            }
            #expect(outcome.report.status == .completed)
            #expect(outcome.report.ops == 80)

            // A coordinator whose certificate another CA signed: the agent does not let it in.
            let stranger = try ControlTLS.load(certificate: dir + "/stranger.pem", key: dir + "/stranger.key",
                                               ca: dir + "/ca.pem", server: false)
            let refusedStranger = await Self.connect(addresses, tls: stranger)
            #expect(refusedStranger?.code == .unreachable, "\(String(describing: refusedStranger))")
            #expect(refusedStranger?.message.contains("did not accept this coordinator's certificate") == true,
                    "\(String(describing: refusedStranger))")
            // A coordinator that trusts another CA: it does not accept the agent.
            let distrustful = try ControlTLS.load(certificate: dir + "/coordinator.pem", key: dir + "/coordinator.key",
                                                  ca: dir + "/other-ca.pem", server: false)
            let refusedAgent = await Self.connect(addresses, tls: distrustful)
            #expect(refusedAgent?.message.contains("its certificate is not trusted here") == true, "\(String(describing: refusedAgent))")
            // TLS to a plain agent.
            try await LiveAgents.with(count: 1, secret: DistributedTests.secret, policy: AgentPolicy(allowedRoots: [dir])) { plainAgent in
                let refused = await Self.connect(plainAgent, tls: coordinatorTLS)
                #expect(refused?.message.contains("it does not speak TLS") == true, "\(String(describing: refused))")
            }
            // An agent whose certificate does not name the address dialled.
            let misnamed = try ControlTLS.load(certificate: dir + "/misnamed.pem", key: dir + "/misnamed.key", ca: dir + "/ca.pem", server: true)
            try await LiveAgents.with(count: 1, secret: DistributedTests.secret, policy: AgentPolicy(allowedRoots: [dir]),
                                      tls: misnamed) { misnamedAgent in
                let refused = await Self.connect(misnamedAgent, tls: coordinatorTLS)
                #expect(refused?.message.contains("its certificate does not name 127.0.0.1") == true, "\(String(describing: refused))")
            }
            // Plain TCP to a TLS agent: one plain frame says what to give.
            let plain = await Self.connect(addresses, tls: nil)
            #expect(plain?.message.contains(PlainTextSniffer.sentence) == true, "\(String(describing: plain))")
        }
        // Nothing but the run's own directories was written by the refused coordinators.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("loadgen-") }.count == 2)
    }

    @Test func theOptionsComeTogetherAndNameABadFile() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        try Self.certificates(in: dir)
        let agentHalf = try await TestSupport.run(["agent", "--insecure", "--tls-cert", dir + "/agent.pem"], timeout: 10)
        #expect(agentHalf.status == 2)
        #expect(agentHalf.stderr.contains("--tls-key and --tls-ca are missing"), "\(agentHalf.stderr)")
        let badKey = try await TestSupport.run(["agent", "--insecure", "--tls-cert", dir + "/agent.pem", "--tls-key", dir + "/agent.cnf",
                                                "--tls-ca", dir + "/ca.pem"], timeout: 10)
        #expect(badKey.status == 2)
        #expect(badKey.stderr.contains("The TLS key '\(dir)/agent.cnf' cannot be used"), "\(badKey.stderr)")
        let embedded = try await TestSupport.run(["coordinate", "--target", dir, "--files", "1", "--tls-cert", dir + "/coordinator.pem",
                                                  "--tls-key", dir + "/coordinator.key", "--tls-ca", dir + "/ca.pem"],
                                                 environment: ["LOADGEN_DB": dir + "/db.sqlite"], timeout: 10)
        #expect(embedded.status == 2)
        #expect(embedded.stderr.contains("the embedded agent runs in this process"), "\(embedded.stderr)")
    }
}

/// The agent and coordinator commands' refusals, through the built binary.
@Suite(.timeLimit(.minutes(1)))
struct AgentCommandTests {
    @Test(arguments: [
        (["--listen", "0.0.0.0:0"], "needs --secret-file"),
        (["--listen", "0.0.0.0:0", "--insecure"], "only on a loopback"),
        (["--listen", "127.0.0.1:0"], "--insecure"),
        (["--listen", "127.0.0.1:0", "--secret-file", "/nonexistent/secret"], "/nonexistent/secret"),
        (["--listen", "127.0.0.1:99999", "--insecure"], "99999"),
        (["--insecure", "--allow-root", "/nonexistent/root"], "/nonexistent/root"),
        (["--insecure", "--max-duration", "forever"], "forever"),
    ])
    func agentRefusesToStartUnsafely(arguments: [String], words: String) async throws {
        let out = try await TestSupport.run(["agent"] + arguments, timeout: 10)
        #expect(out.status == 2, "\(out.stderr)")
        #expect(out.stderr.contains(words), "\(out.stderr)")
    }

    @Test func agentRefusesAGroupReadableSecret() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let path = dir + "/secret"
        try Data("0123456789abcdef0123456789abcdef".utf8).write(to: URL(fileURLWithPath: path))
        chmod(path, 0o640)
        let out = try await TestSupport.run(["agent", "--secret-file", path], timeout: 10)
        #expect(out.status == 2)
        #expect(out.stderr.contains("chmod 600"))
    }

    @Test func anUnreachableAgentIsARefusal() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let out = try await TestSupport.run(["coordinate", "--target", dir, "--agents", "127.0.0.1:1", "--files", "1"],
                                      environment: ["LOADGEN_DB": dir + "/db.sqlite"], timeout: 20)
        #expect(out.status == 2, "\(out.stderr)")
        #expect(out.stderr.contains("127.0.0.1:1"))
    }

    @Test func theBinaryAgentServesTheBinaryCoordinator() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let secret = dir + "/secret"
        try Data("0123456789abcdef0123456789abcdef\n".utf8).write(to: URL(fileURLWithPath: secret))
        chmod(secret, 0o600)
        let agent = Process()
        agent.executableURL = URL(fileURLWithPath: TestSupport.binary)
        agent.arguments = ["agent", "--listen", "127.0.0.1:0", "--secret-file", secret, "--allow-root", dir, "--id", "bin-agent"]
        let out = Pipe()
        agent.standardOutput = out
        agent.standardError = FileHandle.nullDevice
        try agent.run()
        defer { agent.terminate(); agent.waitUntilExit() }
        // "loadgen agent bin-agent listening on 127.0.0.1:PORT"
        var line = ""
        while !line.contains("\n") {
            let data = out.fileHandleForReading.availableData
            if data.isEmpty { break }
            line += String(decoding: data, as: UTF8.self)
        }
        let address = try #require(line.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines))
        let run = try await TestSupport.run(["coordinate", "--target", dir, "--agents", address, "--secret-file", secret,
                                       "--files", "60", "--mode", "threads,processes", "--json"],
                                      environment: ["LOADGEN_DB": dir + "/db.sqlite"])
        #expect(run.status == 0, "\(run.stderr)")
        let lines = run.stdout.split(separator: "\n")
        #expect(lines.count == 2)
        for text in lines {
            let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
            #expect(object["ops"] as? Int == 60)
            #expect((object["per_agent"] as? [[String: Any]])?.first?["agent"] as? String == "bin-agent")
        }
    }
}
