import LoadgenCore
import Synchronization

/// Runs a phase with an executor while reporting it: an `interval` message at every tick, then `phase_done`.
///
/// The reporter wakes just after each tick boundary, takes what the workers handed over, and sends it; the
/// intervals of a phase sum exactly to its `phase_done` totals.
public struct PhaseRunner: Sendable {
    public let runID: String
    public let tickNanos: UInt64
    public let emit: @Sendable (WireMessage) async -> Void

    public init(runID: String, tickNanos: UInt64, emit: @escaping @Sendable (WireMessage) async -> Void) {
        self.runID = runID
        self.tickNanos = tickNanos
        self.emit = emit
    }

    /// Runs `phase` from `startAtNanos`; `finish` runs after the workers, inside the timed duration.
    public func run(_ phase: Phase, startAtNanos: UInt64, executor: any PhaseExecutor, stop: StopSignal,
                    targetCount: Int = 0, finish: @escaping @Sendable () -> String?) async -> WireMessage.PhaseDone {
        let mailbox = TallyMailbox(targetCount: targetCount)
        let control = WorkerControl(stop: stop, startAtNanos: startAtNanos, tickNanos: self.tickNanos)
        let totals = Totals()
        let cpu = CPUClock()
        let runID = self.runID
        let tick = self.tickNanos
        let emit = self.emit

        // The reporter is cancelled when the workers finish, and a write from a cancelled task is dropped (NIO's
        // writer throws CancellationError): the interval it had just taken from the mailbox would be lost, and the
        // intervals would no longer sum to the phase (seen once in CI: an agent's 400,000 files reported as 382,261).
        // So intervals go out, in order, from a task of their own that is never cancelled.
        let (outbox, post) = AsyncStream.makeStream(of: WireMessage.self)
        async let posted: Void = { for await message in outbox { await emit(message) } }()
        let (results, nextSeq) = await withTaskGroup(of: Int.self) { group in
            group.addTask {
                var seq = 1
                while !Task.isCancelled {
                    let due = startAtNanos &+ UInt64(seq) &* tick &+ 5_000_000
                    let now = MonotonicClock.nowNanos()
                    if due > now {
                        do { try await Task.sleep(for: .nanoseconds(Int64(due - now))) } catch { break }
                    }
                    var handed = mailbox.take()
                    handed.tally.cpu.add(cpu.since())
                    totals.add(handed.tally)
                    post.yield(.interval(.init(runID: runID, phase: phase, seq: seq,
                                               elapsedNanos: MonotonicClock.nowNanos() &- startAtNanos, handed: handed)))
                    seq += 1
                }
                return seq
            }
            let results = await executor.runPhase(phase, control: control, mailbox: mailbox)
            group.cancelAll()
            let nextSeq = await group.next() ?? 1
            return (results, nextSeq)
        }
        post.finish()
        await posted
        let finishStart = MonotonicClock.nowNanos()
        let finishFailure = finish()
        let end = MonotonicClock.nowNanos()
        let doneTimes = results.compactMap(\.doneAtNanos).map { $0 > startAtNanos ? $0 - startAtNanos : 0 }
        let firstDone = doneTimes.min() ?? (finishStart &- startAtNanos)
        let lastDone = doneTimes.max() ?? (finishStart &- startAtNanos)
        // The phase lasts until its slowest worker finished, plus the finishing step (a final sync): the time
        // spent stopping the reporter is bookkeeping, not the workload's.
        let duration = lastDone &+ (end &- finishStart)
        var last = mailbox.take()
        last.tally.cpu.add(cpu.since())
        totals.add(last.tally)
        await emit(.interval(.init(runID: runID, phase: phase, seq: nextSeq, elapsedNanos: duration, handed: last)))
        let sums = totals.value
        var status = RunStatus.completed
        var message: String?
        if let failure = results.compactMap(\.failure).first {
            status = .failed
            message = failure
        } else if let reason = stop.reason {
            status = .aborted
            message = reason
        } else if let finishFailure {
            status = .failed
            message = finishFailure
        } else if sums.ops == 0, sums.errors > 0 {
            status = .failed
            message = "Every operation failed (\(sums.errors) errors)."
        }
        let done = WireMessage.PhaseDone(
            runID: runID, phase: phase, status: status, message: message, ops: sums.ops, bytes: sums.bytes,
            errors: sums.errors, durationNanos: duration, firstDoneNanos: firstDone, lastDoneNanos: lastDone)
        await emit(.phaseDone(done))
        return done
    }
}

/// This process's CPU time between readings (the reporter's, once per interval).
private final class CPUClock: Sendable {
    private let last = Mutex(ProcessCPU.now())

    /// The CPU time used since the last call (or since this clock was made).
    func since() -> CPUTime {
        let now = ProcessCPU.now()
        return self.last.withLock { last in
            defer { last = now }
            return now.since(last)
        }
    }
}

/// Running sums of what a phase reported.
private final class Totals: Sendable {
    struct Sums { var ops: UInt64 = 0; var bytes: UInt64 = 0; var errors: UInt64 = 0 }
    private let sums = Mutex<Sums>(Sums())

    func add(_ tally: Tally) {
        self.sums.withLock {
            $0.ops &+= tally.ops
            $0.bytes &+= tally.bytes
            $0.errors &+= tally.errors.total
        }
    }

    var value: Sums { self.sums.withLock { $0 } }
}

extension WireMessage.Interval {
    /// An interval of what was handed over: the threads' dense histogram made sparse, summed with the worker
    /// processes' sparse ones as they came (one of them alone is forwarded untouched).
    init(runID: String, phase: Phase, seq: Int, elapsedNanos: UInt64, handed: TallyMailbox.Handed) {
        self.init(runID: runID, phase: phase, seq: seq, elapsedNanos: elapsedNanos, tally: handed.tally)
        if !handed.sparse.isEmpty {
            self.latency = SparseHistogram.merged([self.latency] + handed.sparse)
        }
    }
}
