import Foundation
import LoadgenCore
import Subprocess
import Synchronization

import SystemPackage

/// The agent side of `processes` mode: one `loadgen worker` child per worker, driven over its stdin and stdout
/// with the same frames agents use over TCP.
///
/// A child that dies (killed, crashed) closes its stdout; whatever it reported until then is kept, and its share is
/// reported as failed with what it did, never waited on forever.
public final class WorkerProcessPool: PhaseExecutor {
    private struct Child {
        var commands: AsyncStream<WireMessage>.Continuation?
        var prepared = false
        var exited: String?
        var phaseResult: WorkerResult?
        var opsThisPhase: UInt64 = 0
    }

    private struct State {
        var children: [Child]
        var prepareFailure: LoadgenError?
        var phase: (mailbox: TallyMailbox, startAt: UInt64, waiter: CheckedContinuation<[WorkerResult], Never>?)?
    }

    private let state: Mutex<State>
    private let runID: String

    private init(count: Int, runID: String) {
        self.runID = runID
        self.state = Mutex(State(children: Array(repeating: Child(), count: count)))
    }

    /// Starts `works.count` worker processes of `executable`, waits until each has prepared its share, runs `body`
    /// with the pool, then closes the children's input and waits for them to exit.
    public static func withPool<R: Sendable>(
        executable: String, works: [WireMessage.Work], prepareTimeoutNanos: UInt64 = 30_000_000_000,
        _ body: @Sendable (WorkerProcessPool) async throws(LoadgenError) -> R
    ) async throws(LoadgenError) -> R {
        let pool = WorkerProcessPool(count: works.count, runID: works.first?.request.runID ?? "")
        let outcome: Result<R, LoadgenError> = await withTaskGroup(of: Void.self) { group in
            for (index, work) in works.enumerated() {
                let (commands, continuation) = AsyncStream.makeStream(of: WireMessage.self)
                pool.state.withLock { $0.children[index].commands = continuation }
                continuation.yield(.work(work))
                group.addTask { await pool.runChild(index, executable: executable, commands: commands) }
            }
            let result: Result<R, LoadgenError>
            do {
                try await pool.waitPrepared(timeoutNanos: prepareTimeoutNanos)
                result = .success(try await body(pool))
            } catch let error as LoadgenError {
                result = .failure(error)
            } catch {
                result = .failure(LoadgenError(.worker, "The worker processes could not be started: \(error)."))
            }
            pool.closeAll()
            await group.waitForAll()
            return result
        }
        return try outcome.get()
    }

    // MARK: - Phases

    public func runPhase(_ phase: Phase, control: WorkerControl, mailbox: TallyMailbox) async -> [WorkerResult] {
        await withTaskGroup(of: Void.self) { group in
            // Forward a stop (abort, lost coordinator) to the children within 20 ms.
            group.addTask {
                while !Task.isCancelled, !control.stop.isRequested {
                    try? await Task.sleep(for: .milliseconds(20))
                }
                if control.stop.isRequested, let reason = control.stop.reason { self.abort(reason) }
            }
            let results = await withCheckedContinuation { (waiter: CheckedContinuation<[WorkerResult], Never>) in
                let commands: [AsyncStream<WireMessage>.Continuation] = self.state.withLock { state in
                    for i in state.children.indices {
                        state.children[i].phaseResult = state.children[i].exited.map {
                            WorkerResult(doneAtNanos: nil, failure: $0)
                        }
                        state.children[i].opsThisPhase = 0
                    }
                    state.phase = (mailbox, control.startAtNanos, waiter)
                    return state.children.compactMap { $0.exited == nil ? $0.commands : nil }
                }
                for command in commands {
                    command.yield(.start(.init(runID: self.runID, phase: phase, atNanos: control.startAtNanos)))
                }
                self.resumePhaseIfDone()
            }
            group.cancelAll()
            return results
        }
    }

    /// Tells every child to stop its load now.
    public func abort(_ reason: String) {
        let commands = self.state.withLock { $0.children.compactMap(\.commands) }
        for command in commands { command.yield(.abort(.init(runID: self.runID, reason: reason))) }
    }

    private func closeAll() {
        let commands = self.state.withLock { state in
            defer { for i in state.children.indices { state.children[i].commands = nil } }
            return state.children.compactMap(\.commands)
        }
        for command in commands { command.finish() }
    }

    // MARK: - Children

    private func runChild(_ index: Int, executable: String, commands: AsyncStream<WireMessage>) async {
        var platform = PlatformOptions()
        // If the agent is cancelled, children get SIGTERM, then SIGKILL; normally they exit at end of input.
        platform.teardownSequence = [.gracefulShutDown(allowedDurationToNextStep: .seconds(2))]
        var exitDescription = "exited"
        do {
            let result = try await Subprocess.run(
                .path(FilePath(executable)), arguments: ["worker"], platformOptions: platform,
                input: .inputWriter, output: .sequence, error: .fileDescriptor(.standardError, closeAfterSpawningProcess: false)
            ) { execution in
                await withTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await command in commands {
                            guard let frame = try? FrameCodec.encode(command) else { continue }
                            do { _ = try await execution.standardInputWriter.write(frame) } catch { break }
                        }
                        _ = try? await execution.standardInputWriter.finish()
                    }
                    var decoder = FrameDecoder()
                    do {
                        reading: for try await chunk in execution.standardOutput {
                            chunk.withUnsafeBytes { decoder.append($0) }
                            while let message = try decoder.nextMessage() {
                                if !self.deliver(index, message) { break reading }
                            }
                        }
                    } catch {
                        self.deliver(index, .failure(.init(code: .protocolViolation, message: "\(error)")))
                    }
                    // The child's output ended: it exited or is about to. Stop writing to it.
                    self.state.withLock { $0.children[index].commands }?.finish()
                    await group.waitForAll()
                }
            }
            switch result.terminationStatus {
            case .exited(let code): exitDescription = "exited with status \(code)"
            case .signaled(let signal): exitDescription = "was killed by signal \(signal)"
            }
        } catch {
            exitDescription = "could not be run (\(error))"
        }
        self.childExited(index, description: exitDescription)
    }

    /// Handles one message from child `index`; false when the child broke the protocol.
    @discardableResult
    private func deliver(_ index: Int, _ message: WireMessage) -> Bool {
        switch message {
        case .prepared:
            self.state.withLock { $0.children[index].prepared = true }
            case .refused(let refused):
            self.state.withLock { if $0.prepareFailure == nil { $0.prepareFailure = LoadgenError(refused.code, refused.message) } }
            case .interval(let interval):
            // The counters merge; the histogram goes on sparse, as it came (checked, never made dense here).
            guard let counters = try? interval.counters(), (try? interval.latency.validate(expectedTotal: interval.ops)) != nil
            else { return false }
            let mailbox = self.state.withLock { state in
                state.children[index].opsThisPhase &+= counters.ops
                return state.phase?.mailbox
            }
            mailbox?.handOver(counters: counters, latency: interval.latency)
        case .phaseDone(let done):
            self.state.withLock { state in
                guard let phase = state.phase else { return }
                state.children[index].phaseResult = WorkerResult(
                    doneAtNanos: phase.startAt &+ done.lastDoneNanos, failure: done.status == .failed ? done.message : nil)
            }
            self.resumePhaseIfDone()
        case .failure(let failure):
            self.state.withLock { state in
                if state.children[index].exited == nil {
                    state.children[index].exited = "Worker process \(index) broke the protocol: \(failure.message)"
                }
            }
            return false
        default:
            return false
        }
        return true
    }

    private func childExited(_ index: Int, description: String) {
        let mailbox: TallyMailbox? = self.state.withLock { state in
            var child = state.children[index]
            child.commands = nil
            let wasDone = child.phaseResult != nil
            let failure = child.exited
                ?? "Worker process \(index) \(description) after \(child.opsThisPhase) operations of its share."
            if child.exited == nil { child.exited = failure }
            if let _ = state.phase, !wasDone {
                child.phaseResult = WorkerResult(doneAtNanos: nil, failure: failure)
                state.children[index] = child
                return state.phase?.mailbox
            }
            state.children[index] = child
            return nil
        }
        if let mailbox {
            var lost = Tally()
            lost.recordError(.workerLost, "worker process \(index) \(description)")
            mailbox.handOver(lost)
        }
        self.resumePhaseIfDone()
    }

    /// Waits until every child has prepared its share; throws the first refusal, a child's death, or a timeout.
    private func waitPrepared(timeoutNanos: UInt64) async throws(LoadgenError) {
        let deadline = MonotonicClock.nowNanos() &+ timeoutNanos
        while true {
            let (ready, failure): (Bool, LoadgenError?) = self.state.withLock { state in
                if let failure = state.prepareFailure { return (false, failure) }
                if let dead = state.children.first(where: { !$0.prepared && $0.exited != nil }) {
                    return (false, LoadgenError(.worker, dead.exited ?? "A worker process exited before it was ready."))
                }
                return (state.children.allSatisfy(\.prepared), nil)
            }
            if let failure { throw failure }
            if ready { return }
            if MonotonicClock.nowNanos() > deadline {
                throw LoadgenError(.worker, "The worker processes did not start within \(DurationText.format(nanos: timeoutNanos)).")
            }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    private func resumePhaseIfDone() {
        let action: (CheckedContinuation<[WorkerResult], Never>, [WorkerResult])? = self.state.withLock { state in
            guard let phase = state.phase, let waiter = phase.waiter else { return nil }
            let results = state.children.map(\.phaseResult)
            guard results.allSatisfy({ $0 != nil }) else { return nil }
            state.phase = nil
            return (waiter, results.map { $0! })
        }
        if let (waiter, results) = action { waiter.resume(returning: results) }
    }
}
