import ArgumentParser
import Foundation
import LoadgenCore
import LoadgenWire
import NIOCore
import NIOPosix

/// `loadgen-bench`: tools for loadgen's own benchmarks (not shipped with the product).
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadgen-bench",
        abstract: "Tools for loadgen's benchmarks.",
        subcommands: [FakeAgents.self])
}

/// Many protocol-speaking agents in one process, to measure a coordinator's ingest: each answers the handshake,
/// prepares whatever it is asked, and after `start` reports an interval every second with a realistic latency
/// histogram (log-normal, hundreds of buckets) for `--seconds`, then `phase_done`. No file is written.
struct FakeAgents: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fake-agents", abstract: "Serve N simulated agents on 127.0.0.1 for an ingest benchmark.")

    @Option(help: "How many agents.")
    var count: Int = 200

    @Option(help: "How long each agent's main phase reports, in seconds.")
    var seconds: Int = 300

    @Option(help: "Latency samples recorded per interval per agent.")
    var samples: Int = 20_000

    @Option(help: "Write the agents' addresses here, one per line (for coordinate --agents-file).")
    var agentsFile: String

    func run() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let seconds = self.seconds
        // The histograms are made once, up front (sixteen shapes, each from `samples` draws), so the simulator's own
        // CPU goes to speaking the protocol rather than to drawing numbers.
        let shapes = (0..<16).map { Shape(tally: Self.makeTally(seed: UInt64($0 + 1), samples: self.samples)) }
        var servers: [NIOAsyncChannel<NIOAsyncChannel<WireMessage, ByteBuffer>, Never>] = []
        for _ in 0..<self.count {
            servers.append(try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .bind(host: "127.0.0.1", port: 0) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // Decoded messages in, raw frames out.
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(WireFrameDecoder()))
                        return try NIOAsyncChannel<WireMessage, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                })
        }
        let lines = servers.map { "127.0.0.1:\($0.channel.localAddress!.port!)" }.joined(separator: "\n") + "\n"
        try lines.write(toFile: self.agentsFile, atomically: true, encoding: .utf8)
        let buckets = shapes.map(\.buckets)
        FileHandle.standardError.write(Data("fake-agents: \(self.count) agents listening; addresses in \(self.agentsFile); intervals of \(self.samples) samples in \(buckets.min()!)-\(buckets.max()!) buckets, \(try shapes.map { try FrameCodec.encode($0.interval(runID: "r", phase: .main, seq: 1, elapsedNanos: 1)).count }.max()!) bytes an interval frame\n".utf8))
        try await withThrowingDiscardingTaskGroup { tasks in
            for (index, server) in servers.enumerated() {
                tasks.addTask {
                    try await server.executeThenClose { inbound in
                        try await withThrowingDiscardingTaskGroup { connections in
                            for try await connection in inbound {
                                connections.addTask {
                                    try? await Self.serve(connection, index: index, seconds: seconds, shapes: shapes)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    static func makeTally(seed: UInt64, samples: Int) -> Tally {
        var generator = SplitMix(state: seed &* 0x9E37_79B9_7F4A_7C15)
        var tally = Tally()
        for _ in 0..<samples {
            // Log-normal around 200 us with a long tail.
            let u1 = max(Double(generator.next() >> 11) / Double(1 << 53), 1e-12)
            let u2 = Double(generator.next() >> 11) / Double(1 << 53)
            let normal = (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
            tally.recordLatency(UInt64(200_000 * exp(0.6 * normal)))
        }
        tally.ops = UInt64(samples)
        tally.bytes = UInt64(samples) * 2
        return tally
    }

    /// A histogram shape, made sparse once (in the form the binary frames carry).
    struct Shape: Sendable {
        let ops: UInt64
        let latency: SparseHistogram
        let sum: UInt64
        let buckets: Int

        init(tally: Tally) {
            let sparse = SparseHistogram(tally.latency)
            self.buckets = sparse.bucketCount
            self.ops = tally.ops
            self.sum = tally.latencySumNanos
            self.latency = SparseHistogram(packed: sparse.packedBuckets, min: sparse.min, max: sparse.max)
        }

        func interval(runID: String, phase: Phase, seq: Int, elapsedNanos: UInt64) -> WireMessage {
            .interval(.init(runID: runID, phase: phase, seq: seq, elapsedNanos: elapsedNanos, ops: self.ops,
                            bytes: self.ops * 2, errors: ErrorCounts(), errorSamples: [:], latency: self.latency,
                            latencySumNanos: self.sum, statusClasses: nil, redirects: nil, targets: nil))
        }
    }

    static func frame(_ message: WireMessage) throws -> ByteBuffer {
        ByteBuffer(bytes: try FrameCodec.encode(message))
    }

    static func serve(_ connection: NIOAsyncChannel<WireMessage, ByteBuffer>, index: Int, seconds: Int, shapes: [Shape]) async throws {
        try await connection.executeThenClose { inbound, raw in
            let outbound = FrameWriter(raw: raw)
            let lastSent = Locked<UInt64>(0)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for try await message in inbound {
                    switch message {
                    case .hello:
                        try await outbound.write(.welcome(.init(loadgenVersion: "bench", agentID: "fake\(index)", host: "fake\(index)",
                                                                cores: 2, nonce: Handshake.makeNonce(), authRequired: false, proof: nil)))
                    case .auth:
                        try await outbound.write(.ready(.init(policy: AgentPolicySummary(allowedRoots: ["/"], maxFiles: 1 << 40, maxBytes: 1 << 50,
                                                                                         maxWorkers: 4096, maxDurationNanos: 1 << 50, maxRate: 1e9))))
                    case .ping(let ping):
                        try await outbound.write(.pong(.init(seq: ping.seq, sentNanos: ping.sentNanos, agentWallNanos: MonotonicClock.wallNanos())))
                    case .heartbeat(let beat):
                        // As a real agent does: no echo when an interval went out in the last 500 ms.
                        if MonotonicClock.nowNanos() &- lastSent.value >= 500_000_000 {
                            try await outbound.write(.heartbeat(beat))
                        }
                    case .prepare(let prepare):
                        try await outbound.write(.prepared(.init(runID: prepare.request.runID, runDirectory: nil)))
                    case .start(let start):
                        group.addTask {
                            try await Self.report(start, outbound: outbound, index: index, seconds: start.phase == .main ? seconds : 0,
                                                  shapes: shapes, lastSent: lastSent)
                        }
                    case .finish(let finish):
                        try await outbound.write(.finished(.init(runID: finish.runID, message: nil)))
                    default:
                        break
                    }
                }
                group.cancelAll()
            }
        }
    }

    static func report(_ start: WireMessage.Start, outbound: FrameWriter, index: Int, seconds: Int, shapes: [Shape],
                       lastSent: Locked<UInt64>) async throws {
        try await Task.sleep(for: .nanoseconds(Int64(start.delayNanos ?? 0)))
        let began = MonotonicClock.nowNanos()
        var totalOps: UInt64 = 0
        for seq in 1...max(1, seconds) {
            if seconds > 0 { try await Task.sleep(for: .seconds(1)) }
            let shape = shapes[(index + seq) % shapes.count]
            totalOps += shape.ops
            try await outbound.write(shape.interval(runID: start.runID, phase: start.phase, seq: seq,
                                                    elapsedNanos: MonotonicClock.nowNanos() - began))
            lastSent.withLock { $0 = MonotonicClock.nowNanos() }
        }
        let elapsed = MonotonicClock.nowNanos() - began
        try await outbound.write(.phaseDone(.init(runID: start.runID, phase: start.phase, status: .completed, message: nil,
                                                  ops: totalOps, bytes: totalOps * 2, errors: 0, durationNanos: elapsed,
                                                  firstDoneNanos: elapsed, lastDoneNanos: elapsed)))
    }
}

/// Writes messages as frames on a raw byte channel.
struct FrameWriter: Sendable {
    let raw: NIOAsyncChannelOutboundWriter<ByteBuffer>

    func write(_ message: WireMessage) async throws {
        try await self.raw.write(ByteBuffer(bytes: try FrameCodec.encode(message)))
    }
}

struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        return FileNamer.mix(self.state)
    }
}
