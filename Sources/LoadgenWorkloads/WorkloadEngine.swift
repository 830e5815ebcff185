import LoadgenCore

/// A contiguous share of a phase's operations: indices `first ..< first + count` (count nil: until stopped or the
/// run's duration ends).
public struct Share: Sendable, Hashable, Codable {
    public var first: UInt64
    public var count: UInt64?

    public init(first: UInt64, count: UInt64?) {
        self.first = first
        self.count = count
    }

    /// Worker `worker` of `workers`'s share of `total` operations (nil total: every worker runs until stopped).
    public static func of(total: UInt64?, workers: Int, worker: Int) -> Share {
        guard let total else { return Share(first: UInt64(worker), count: nil) }
        let s = FileNamer.share(of: total, workers: workers, worker: worker)
        return Share(first: s.first, count: s.count)
    }
}

/// A workload as the executors see it: a few hooks, each with its contract (after fio's ioengine table).
public protocol WorkloadEngine: Sendable {
    /// How many operations a phase has on this agent in all; nil when it runs for a duration.
    func totalOperations(phase: Phase) -> UInt64?

    /// Runs one worker's share of a phase on the calling thread, which it may block. Waits for
    /// `control.startAtNanos`, hands its tally to `sink` at each tick and once at the end, checks `control.stop`
    /// before each operation. Required.
    func runWorker(share: Share, phase: Phase, control: WorkerControl, sink: any TallySink) -> WorkerResult

    /// Runs once after every worker of the phase finished, inside the phase's timed duration (a final sync,
    /// removing emptied directories). Returns a sentence when it failed.
    func finishPhase(_ phase: Phase) -> String?
}
