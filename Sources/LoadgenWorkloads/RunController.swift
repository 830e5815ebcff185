import Foundation
import LoadgenCore

/// Where and how an agent runs what it is asked to: its identity, the roots it may write under, and the binary
/// its worker processes run.
public struct RunContext: Sendable {
    public var agentID: String
    /// Directories a write target must lie under; nil allows any (the embedded agent, acting for its own user).
    public var allowedRoots: [String]?
    /// The `loadgen` binary that `processes` mode runs as `loadgen worker`.
    public var workerExecutable: String
    /// Why io_uring is not to be used here, when it is not (an agent's `--no-io-uring`).
    public var ioUringDisabled: String?
    /// Where fetch runs may connect (nil: anywhere; an agent always gives its policy).
    public var destinations: DestinationPolicy?

    public init(agentID: String, allowedRoots: [String]?, workerExecutable: String, ioUringDisabled: String? = nil,
                destinations: DestinationPolicy? = nil) {
        self.destinations = destinations
        self.agentID = agentID
        self.allowedRoots = allowedRoots
        self.workerExecutable = workerExecutable
        self.ioUringDisabled = ioUringDisabled
    }
}

/// What an agent's session tells a run in progress.
public enum RunCommand: Sendable, Hashable {
    /// Start a phase at a monotonic instant.
    case start(Phase, atNanos: UInt64)
    /// The run is over: release it.
    case finish
}

/// One run on one agent, from `prepare` to `finished`, transport-agnostic: the session feeds it commands and
/// forwards what it emits (`prepared` or `refused`, `interval`s, `phase_done`s, `finished`).
///
/// Stopping is not a command: ``stop`` is set directly (abort, lost coordinator), because it must reach the workers
/// while a phase is running, and every worker reads it before each operation.
public final class RunController: Sendable {
    public let request: RunRequest
    public let context: RunContext
    public let stop = StopSignal()

    public init(request: RunRequest, context: RunContext) {
        self.request = request
        self.context = context
    }

    /// Prepares the run, then serves commands until `finish` or until the command stream ends (the session lost
    /// its coordinator: the run stops and its files stay, since removing them would be load too).
    public func run(commands: AsyncStream<RunCommand>, emit: @escaping @Sendable (WireMessage) async -> Void) async {
        let request = self.request
        do throws(LoadgenError) {
            try OpenFileBudget.check(request, agentID: self.context.agentID)
        } catch {
            await emit(.refused(.init(runID: request.runID, code: error.code, message: error.message)))
            return
        }
        if request.mode == .async, request.workload == .write {
            // Refused before anything is made: the run directory would be the first side effect.
            do throws(LoadgenError) {
                if let why = self.context.ioUringDisabled {
                    throw .unsupported("The async mode for writes needs io_uring, which is turned off on agent \(self.context.agentID): \(why)")
                }
                try AsyncWriteExecutor.probe()
            } catch {
                await emit(.refused(.init(runID: request.runID, code: error.code, message: error.message)))
                return
            }
        }
        let seed = FileNamer.agentSeed(runSeed: request.seed, agentID: self.context.agentID)
        let engine: any WorkloadEngine
        let directory: RunDirectory?
        do {
            (engine, directory) = try self.makeEngine(seed: seed)
        } catch {
            await emit(.refused(.init(runID: request.runID, code: error.code, message: error.message)))
            return
        }

        let serve: @Sendable (any PhaseExecutor) async -> Void = { executor in
            await emit(.prepared(.init(runID: request.runID, runDirectory: directory?.path)))
            await self.serve(commands: commands, executor: executor, engine: engine, directory: directory, emit: emit)
        }
        switch request.mode {
        case .sequential, .threads:
            await serve(ThreadExecutor(engine: engine, workers: request.workers))
        case .processes:
            let works = (0..<request.workers).map { index in
                let share = engine.share(phase: .main, worker: index, of: request.workers)
                return WireMessage.Work(request: request, runDirectory: directory?.path, agentSeed: seed,
                                        workerIndex: index, firstIndex: share.first, count: share.count,
                                        stride: share.stride, destinations: self.context.destinations)
            }
            do {
                try await WorkerProcessPool.withPool(executable: self.context.workerExecutable, works: works) { pool in
                    await serve(pool)
                }
            } catch {
                _ = directory?.discard()
                await emit(.refused(.init(runID: request.runID, code: error.code, message: error.message)))
            }
        case .async:
            if let write = engine as? WriteEngine {
                await serve(AsyncWriteExecutor(engine: write, depth: request.workers))
            } else if let fetch = engine as? FetchEngine {
                do {
                    if fetch.spec.http2 {
                        await serve(try AsyncHTTP2Executor(engine: fetch, connections: request.workers, streams: fetch.spec.streams))
                    } else {
                        await serve(AsyncFetchExecutor(engine: fetch, slots: request.workers))
                    }
                } catch {
                    await emit(.refused(.init(runID: request.runID, code: error.code, message: error.message)))
                }
            }
        }
    }

    private func makeEngine(seed: UInt64) throws(LoadgenError) -> (any WorkloadEngine, RunDirectory?) {
        switch self.request.workload {
        case .write:
            guard let spec = self.request.write else { throw .usage("A write run must carry a write specification.") }
            let directory = try RunDirectory.create(
                target: spec.target, allowedRoots: self.context.allowedRoots,
                name: spec.runDirectoryName(runID: self.request.runID, agentID: self.context.agentID),
                subdirectories: spec.directoryCount(workers: self.request.workers),
                firstSubdirectory: spec.firstSubdirectory(workers: self.request.workers),
                marker: RunMarker(runID: self.request.runID, agentID: self.context.agentID, keep: spec.keep),
                sharedBy: spec.sharedToken == nil ? nil : self.context.agentID)
            return (WriteEngine(spec: spec, directory: directory, seed: seed, workers: self.request.workers, runSeed: self.request.seed),
                    directory)
        case .fetch:
            guard let spec = self.request.fetch else { throw .usage("A fetch run must carry a fetch specification.") }
            return (try FetchEngine(spec: spec, destinations: self.context.destinations), nil)
        }
    }

    private func serve(commands: AsyncStream<RunCommand>, executor: any PhaseExecutor, engine: any WorkloadEngine,
                       directory: RunDirectory?, emit: @escaping @Sendable (WireMessage) async -> Void) async {
        let runner = PhaseRunner(runID: self.request.runID, tickNanos: self.request.intervalNanos, emit: emit)
        var cleanedUp = false
        var ranPhase = false
        var madeFiles = false
        var finished = false
        for await command in commands {
            switch command {
            case .start(let phase, let atNanos):
                if let reason = self.stop.reason {
                    // Stopped between phases: say so at once, so the coordinator does not wait for a phase that
                    // will never run.
                    await emit(.phaseDone(.init(runID: self.request.runID, phase: phase, status: .aborted, message: reason,
                                                ops: 0, bytes: 0, errors: 0, durationNanos: 0, firstDoneNanos: 0,
                                                lastDoneNanos: 0)))
                    continue
                }
                ranPhase = true
                if phase != .mkdir { madeFiles = true }
                let done = await runner.run(phase, startAtNanos: atNanos, executor: executor, stop: self.stop,
                                            targetCount: self.request.fetch?.urls.count ?? 0,
                                            finish: { engine.finishPhase(phase) })
                if phase == .cleanup, done.status == .completed { cleanedUp = true }
            case .finish:
                finished = true
            }
            if finished { break }
        }
        if !finished { self.stop.request("The run's coordinator went away.") }
        var message: String?
        if let directory {
            if !ranPhase {
                message = directory.discard()
            } else if !madeFiles, let write = engine as? WriteEngine {
                // Only the tree was made (the run stopped before create): nothing of the run's is worth keeping.
                write.removeTree()
                message = directory.discard()
            } else if cleanedUp {
                message = directory.removeSelf()
            } else if self.request.write?.keep == true {
                message = nil
            } else {
                message = "The files of this run were left in '\(directory.path)'."
            }
        }
        await emit(.finished(.init(runID: self.request.runID, message: message)))
    }
}
