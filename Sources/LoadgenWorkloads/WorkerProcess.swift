import Foundation
import Glibc
import LoadgenCore
import Synchronization

/// The child side of `processes` mode: the hidden `loadgen worker` command.
///
/// It reads frames on stdin (`work`, then `start` per phase, `abort`), runs its one share on a thread of its own,
/// and writes frames on stdout: `prepared`, an `interval` at each tick, `phase_done`. End of stdin means the agent
/// is gone: the worker stops its load and exits, so a killed agent never leaves orphans writing files.
public enum WorkerProcess {
    /// Serves one agent over the given descriptors until stdin closes; returns the exit status.
    public static func serve(input: Int32 = 0, output: Int32 = 1) -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        // Ctrl-C reaches the whole process group; the agent decides when its workers stop.
        signal(SIGINT, SIG_IGN)
        let writer = FrameWriter(fd: output)
        let stop = StopSignal()
        var decoder = FrameDecoder()
        var job: Job?
        var phaseThread: Thread?
        let running = Mutex<Bool>(false)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 8)
        defer { buffer.deallocate() }

        readLoop: while true {
            let n = read(input, buffer.baseAddress, buffer.count)
            if n < 0, errno == EINTR { continue }
            if n <= 0 { break }
            decoder.append(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            while true {
                let message: WireMessage?
                do {
                    message = try decoder.nextMessage()
                } catch {
                    writer.write(.failure(.init(code: error.code, message: error.message)))
                    break readLoop
                }
                guard let message else { break }
                switch message {
                case .work(let work):
                    do {
                        job = try Job(work: work)
                        writer.write(.prepared(.init(runID: work.request.runID, runDirectory: work.runDirectory)))
                    } catch {
                        writer.write(.refused(.init(runID: work.request.runID, code: error.code, message: error.message)))
                    }
                case .start(let start):
                    // The agent sends a start only after the last phase's phase_done, which the phase thread writes
                    // as its last act: give that thread the moment it needs to end (2 s at most) rather than call
                    // the next phase's start a protocol error (it was, 1 run in 5 of `--mode all` on a busy host).
                    let ending = MonotonicClock.nowNanos() &+ 2_000_000_000
                    while running.withLock({ $0 }), MonotonicClock.nowNanos() < ending { usleep(200) }
                    guard let job, job.work.request.runID == start.runID, !running.withLock({ $0 }) else {
                        writer.write(.failure(.init(code: .protocolViolation, message: "A start arrived with no run prepared, or while a phase was running.")))
                        break readLoop
                    }
                    running.withLock { $0 = true }
                    let startAt = start.atNanos ?? MonotonicClock.nowNanos()
                    let thread = Thread {
                        job.runPhase(start.phase, startAt: startAt, stop: stop, writer: writer)
                        running.withLock { $0 = false }
                    }
                    thread.stackSize = 1 << 20
                    thread.start()
                    phaseThread = thread
                case .abort(let abort):
                    stop.request(abort.reason)
                case .heartbeat:
                    continue
                default:
                    writer.write(.failure(.init(code: .protocolViolation, message: "A worker process does not accept \(message.kind.rawValue) messages.")))
                    break readLoop
                }
            }
        }
        // stdin closed: the agent finished with us, or died. Stop any load and wait for the phase to wind down.
        stop.request("The agent closed the worker's input.")
        _ = phaseThread
        while running.withLock({ $0 }) { usleep(1000) }
        return 0
    }

    /// One worker's share of a run, rebuilt from the `work` message.
    private final class Job: Sendable {
        let work: WireMessage.Work
        let engine: any WorkloadEngine

        init(work: WireMessage.Work) throws(LoadgenError) {
            try work.request.validate()
            self.work = work
            switch work.request.workload {
            case .write:
                guard let spec = work.request.write, let path = work.runDirectory else {
                    throw .usage("A write worker needs a write specification and a run directory.")
                }
                let directory = try RunDirectory.open(existing: path, subdirectories: spec.directoryCount(workers: work.request.workers),
                                                      firstSubdirectory: spec.firstSubdirectory(workers: work.request.workers))
                self.engine = WriteEngine(spec: spec, directory: directory, seed: work.agentSeed, workers: work.request.workers,
                                          runSeed: work.request.seed)
            case .fetch:
                guard let spec = work.request.fetch else { throw .usage("A fetch worker needs a fetch specification.") }
                self.engine = try FetchEngine(spec: spec, destinations: work.destinations)
            }
        }

        func runPhase(_ phase: Phase, startAt: UInt64, stop: StopSignal, writer: FrameWriter) {
            let runID = self.work.request.runID
            let sink = FrameSink(writer: writer, runID: runID, phase: phase, startAt: startAt)
            let control = WorkerControl(stop: stop, startAtNanos: startAt, tickNanos: self.work.request.intervalNanos)
            // Cleanup removes exactly the share this worker created.
            // The mkdir phase's share is the worker's top-level subtrees of the --tree.
            let share = phase == .mkdir
                ? self.engine.share(phase: .mkdir, worker: self.work.workerIndex, of: self.work.request.workers)
                : Share(first: self.work.firstIndex, count: self.work.count, stride: self.work.stride)
            let result = self.engine.runWorker(share: share, phase: phase, control: control, sink: sink)
            let done = (result.doneAtNanos ?? MonotonicClock.nowNanos()) &- startAt
            writer.write(.phaseDone(.init(
                runID: runID, phase: phase, status: result.failure == nil ? .completed : .failed, message: result.failure,
                ops: sink.ops, bytes: 0, errors: 0, durationNanos: done, firstDoneNanos: done, lastDoneNanos: done)))
        }
    }
}

/// A worker process's tally sink: each hand-over goes straight to the agent as an `interval` frame.
final class FrameSink: TallySink {
    private let writer: FrameWriter
    private let runID: String
    private let phase: Phase
    private let startAt: UInt64
    private let state = Mutex<(seq: Int, ops: UInt64, cpu: CPUTime)>((1, 0, ProcessCPU.now()))

    init(writer: FrameWriter, runID: String, phase: Phase, startAt: UInt64) {
        self.writer = writer
        self.runID = runID
        self.phase = phase
        self.startAt = startAt
    }

    var ops: UInt64 { self.state.withLock { $0.ops } }

    func handOver(_ tally: Tally, latencies: UnsafeBufferPointer<UInt64>, lags: UnsafeBufferPointer<UInt64>) {
        var tally = tally.adding(latencies, lags: lags)
        let seq: Int = self.state.withLock { state in
            state.ops &+= tally.ops
            // This process's CPU since its last hand-over: the agent adds it to its own for the interval.
            let cpu = ProcessCPU.now()
            tally.cpu = cpu.since(state.cpu)
            state.cpu = cpu
            defer { state.seq += 1 }
            return state.seq
        }
        self.writer.write(.interval(.init(runID: self.runID, phase: self.phase, seq: seq,
                                          elapsedNanos: MonotonicClock.nowNanos() &- self.startAt, tally: tally)))
    }
}
