import LoadgenCore

/// A share of a phase's operations: indices `first`, `first + stride`, ... (`count` of them; nil: until stopped or
/// the run's duration ends).
///
/// Writes take contiguous shares (stride 1: each worker's files are its own run of names). Fetches interleave
/// (stride = workers), so that under `--rate` every worker's requests fall due evenly spread in time; contiguous
/// shares would leave most workers idle while one fell behind on a burst of due requests.
public struct Share: Sendable, Hashable, Codable {
    public var first: UInt64
    public var count: UInt64?
    public var stride: UInt64

    public init(first: UInt64, count: UInt64?, stride: UInt64 = 1) {
        self.first = first
        self.count = count
        self.stride = stride
    }

    /// Worker `worker` of `workers`'s contiguous share of `total` operations (nil total: until stopped).
    public static func of(total: UInt64?, workers: Int, worker: Int) -> Share {
        guard let total else { return Share(first: UInt64(worker), count: nil, stride: UInt64(workers)) }
        let s = FileNamer.share(of: total, workers: workers, worker: worker)
        return Share(first: s.first, count: s.count)
    }

    /// Worker `worker` of `workers`'s interleaved share: indices worker, worker + workers, ...
    public static func interleaved(total: UInt64?, workers: Int, worker: Int) -> Share {
        let n = UInt64(workers)
        let w = UInt64(worker)
        guard let total else { return Share(first: w, count: nil, stride: n) }
        return Share(first: w, count: total > w ? (total - w + n - 1) / n : 0, stride: n)
    }
}

/// A workload as the executors see it: a few hooks, each with its contract (after fio's ioengine table).
public protocol WorkloadEngine: Sendable {
    /// How many operations a phase has on this agent in all; nil when it runs for a duration.
    func totalOperations(phase: Phase) -> UInt64?

    /// Worker `worker` of `workers`'s share of a phase (default: contiguous).
    func share(phase: Phase, worker: Int, of workers: Int) -> Share

    /// Runs one worker's share of a phase on the calling thread, which it may block. Waits for
    /// `control.startAtNanos`, hands its tally to `sink` at each tick and once at the end, checks `control.stop`
    /// before each operation. Required.
    func runWorker(share: Share, phase: Phase, control: WorkerControl, sink: any TallySink) -> WorkerResult

    /// Runs once after every worker of the phase finished, inside the phase's timed duration (a final sync,
    /// removing emptied directories). Returns a sentence when it failed.
    func finishPhase(_ phase: Phase) -> String?
}

extension WorkloadEngine {
    public func share(phase: Phase, worker: Int, of workers: Int) -> Share {
        Share.of(total: self.totalOperations(phase: phase), workers: workers, worker: worker)
    }
}
