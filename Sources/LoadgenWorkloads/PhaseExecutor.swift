import LoadgenCore

/// Runs one phase's workers and returns how each ended, once all have. Workers hand their tallies to the mailbox.
public protocol PhaseExecutor: Sendable {
    func runPhase(_ phase: Phase, control: WorkerControl, mailbox: TallyMailbox) async -> [WorkerResult]
}

/// `sequential` (one thread) and `threads` (one thread per worker), each worker blocking in its own system calls.
public struct ThreadExecutor: PhaseExecutor {
    public let engine: any WorkloadEngine
    public let workers: Int

    public init(engine: any WorkloadEngine, workers: Int) {
        self.engine = engine
        self.workers = workers
    }

    public func runPhase(_ phase: Phase, control: WorkerControl, mailbox: TallyMailbox) async -> [WorkerResult] {
        let engine = self.engine
        let workers = self.workers
        return await WorkerThreads.run(count: workers, name: "lg-\(phase.rawValue)") { index in
            engine.runWorker(share: engine.share(phase: phase, worker: index, of: workers), phase: phase,
                             control: control, sink: mailbox)
        }
    }
}
