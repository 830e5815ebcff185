import Foundation
import SwiftProtobuf

/// The binary frames of protocol 6 (4's, with an interval's CPU time and schedule lag added) (`schemas/wire/frames.proto`): the messages that make up nearly all the traffic
/// of a big run, interval reports and heartbeats, travel as protobuf; the rest stay JSON. The generated types stay
/// inside this module: everything else sees ``WireMessage``.
enum BinaryFrames {
    static let decodingOptions: BinaryDecodingOptions = {
        var options = BinaryDecodingOptions()
        // A frame nests three deep (frame, interval, histogram or target); unknown fields are a newer peer's, which
        // the handshake has already refused.
        options.messageDepthLimit = 4
        options.discardUnknownFields = true
        return options
    }()

    /// The message as a binary frame body, or nil for a message that travels as JSON.
    static func body(_ message: WireMessage) throws(LoadgenError) -> [UInt8]? {
        var frame = Loadgen_Wire_V6_BinaryFrame()
        switch message {
        case .interval(let interval): frame.interval = Loadgen_Wire_V6_Interval(interval)
        case .heartbeat(let beat): frame.heartbeat = .with { $0.seq = UInt64(clamping: beat.seq) }
        default: return nil
        }
        do {
            return try frame.serializedBytes()
        } catch {
            throw .protocolViolation("A \(message.kind.rawValue) message could not be encoded: \(error).")
        }
    }

    /// Decodes a binary frame body (one that does not start with `{`), naming what was wrong.
    static func decode(_ body: UnsafeRawBufferPointer) throws(LoadgenError) -> WireMessage {
        let frame: Loadgen_Wire_V6_BinaryFrame
        do {
            frame = try Loadgen_Wire_V6_BinaryFrame(serializedBytes: body.bytes, options: Self.decodingOptions)
        } catch let error as BinaryDecodingError {
            throw .protocolViolation("A binary frame could not be decoded: \(Self.describe(error)).")
        } catch {
            throw .protocolViolation("A binary frame could not be decoded: \(error).")
        }
        switch frame.body {
        case .interval(let interval): return .interval(try WireMessage.Interval(interval))
        case .heartbeat(let beat):
            guard beat.seq <= UInt64(Int.max) else { throw .protocolViolation("A heartbeat's seq \(beat.seq) is out of range.") }
            return .heartbeat(.init(seq: Int(beat.seq)))
        case nil:
            throw .protocolViolation("A binary frame holds no message (neither an interval nor a heartbeat).")
        }
    }

    private static func describe(_ error: BinaryDecodingError) -> String {
        switch error {
        case .truncated: "it ends inside a field (truncated)"
        case .malformedProtobuf: "it is not well-formed protobuf"
        case .messageDepthLimit: "it nests deeper than a loadgen frame does"
        case .invalidUTF8: "a text field is not UTF-8"
        case .trailingGarbage: "it has bytes after its message"
        default: "\(error)"
        }
    }
}

extension Loadgen_Wire_V6_Interval {
    init(_ interval: WireMessage.Interval) {
        self.init()
        self.runID = interval.runID
        switch interval.phase {
        case .main: self.phase = .main
        case .stat: self.phase = .stat
        case .read: self.phase = .read
        case .mkdir: self.phase = .mkdir
        case .cleanup: self.phase = .cleanup
        }
        self.seq = UInt64(clamping: interval.seq)
        self.elapsedNanos = interval.elapsedNanos
        self.ops = interval.ops
        self.bytes = interval.bytes
        if !interval.errors.isEmpty { self.errors = interval.errors.dictionary }
        self.errorSamples = interval.errorSamples
        self.latency = .with {
            $0.buckets = interval.latency.packedBuckets
            $0.min = interval.latency.min
            $0.max = interval.latency.max
        }
        self.latencySumNanos = interval.latencySumNanos
        self.statusClasses = interval.statusClasses ?? []
        self.redirects = interval.redirects ?? 0
        self.targets = (interval.targets ?? []).map { target in
            .with {
                $0.ops = target.ops
                $0.errors = target.errors
                $0.bytes = target.bytes
                $0.latencyNanosSum = target.latencyNanosSum
                $0.latencyNanosMax = target.latencyNanosMax
                $0.statusClasses = target.statusClasses
            }
        }
        self.cpuUserNanos = interval.cpu?.userNanos ?? 0
        self.cpuSystemNanos = interval.cpu?.systemNanos ?? 0
        if let lag = interval.scheduleLag {
            self.scheduleLag = .with {
                $0.buckets = lag.packedBuckets
                $0.min = lag.min
                $0.max = lag.max
            }
        }
    }
}

extension WireMessage.Interval {
    /// The interval a binary frame carried. The histogram's bytes are kept as they came (one copy, no work per
    /// bucket) and checked where they are read.
    init(_ binary: Loadgen_Wire_V6_Interval) throws(LoadgenError) {
        let phase: Phase
        switch binary.phase {
        case .main: phase = .main
        case .cleanup: phase = .cleanup
        case .stat: phase = .stat
        case .read: phase = .read
        case .mkdir: phase = .mkdir
        case .UNRECOGNIZED(let raw): throw .protocolViolation("An interval names phase \(raw), which is not a phase.")
        }
        guard binary.seq <= UInt64(Int.max) else { throw .protocolViolation("An interval's seq \(binary.seq) is out of range.") }
        let named = ErrorCounts.named(binary.errors)
        guard let errors = named.counts else {
            throw .protocolViolation("An interval counts errors of the unknown kind '\(String((named.unknown ?? "").prefix(64)))'.")
        }
        if !binary.statusClasses.isEmpty, binary.statusClasses.count != 5 {
            throw .protocolViolation("An interval's status_classes must hold 5 counts (1xx to 5xx); got \(binary.statusClasses.count).")
        }
        var targets: [TargetTally] = []
        targets.reserveCapacity(binary.targets.count)
        for target in binary.targets {
            guard target.statusClasses.isEmpty || target.statusClasses.count == 5 else {
                throw .protocolViolation("A target's status_classes must hold 5 counts (1xx to 5xx); got \(target.statusClasses.count).")
            }
            var tally = TargetTally()
            tally.ops = target.ops
            tally.errors = target.errors
            tally.bytes = target.bytes
            tally.latencyNanosSum = target.latencyNanosSum
            tally.latencyNanosMax = target.latencyNanosMax
            if !target.statusClasses.isEmpty { tally.statusClasses = target.statusClasses }
            targets.append(tally)
        }
        self.init(runID: binary.runID, phase: phase, seq: Int(binary.seq), elapsedNanos: binary.elapsedNanos,
                  ops: binary.ops, bytes: binary.bytes, errors: errors, errorSamples: binary.errorSamples,
                  latency: SparseHistogram(packed: binary.latency.buckets, min: binary.latency.min, max: binary.latency.max),
                  latencySumNanos: binary.latencySumNanos,
                  statusClasses: binary.statusClasses.isEmpty ? nil : binary.statusClasses,
                  redirects: binary.redirects == 0 ? nil : binary.redirects, targets: targets.isEmpty ? nil : targets,
                  cpu: binary.cpuUserNanos == 0 && binary.cpuSystemNanos == 0
                      ? nil : CPUTime(userNanos: binary.cpuUserNanos, systemNanos: binary.cpuSystemNanos),
                  scheduleLag: binary.hasScheduleLag
                      ? SparseHistogram(packed: binary.scheduleLag.buckets, min: binary.scheduleLag.min, max: binary.scheduleLag.max) : nil)
    }
}

extension WireMessage.Interval {
    /// The interval as protocol 6 carries it (the `Interval` message of frames.proto, without the frame around it):
    /// the run store keeps each interval in this form, exactly as it was received.
    public func binaryBody() throws(LoadgenError) -> [UInt8] {
        do {
            return try Loadgen_Wire_V6_Interval(self).serializedBytes()
        } catch {
            throw .protocolViolation("An interval could not be encoded: \(error).")
        }
    }

    /// An interval kept by ``binaryBody()``.
    public init(binaryBody bytes: [UInt8]) throws(LoadgenError) {
        let message: Loadgen_Wire_V6_Interval
        do {
            message = try Loadgen_Wire_V6_Interval(serializedBytes: bytes, options: BinaryFrames.decodingOptions)
        } catch {
            throw .protocolViolation("A stored interval could not be decoded: \(error).")
        }
        try self.init(message)
    }
}
