import LoadgenCore
import LoadgenStore

/// Keeps runs in the ``RunStore`` without slowing them: interval reports are queued as they arrive and written in
/// batches (one transaction a second) by a task of their own; the run's start and end are written at once.
public final class StoreRecorder: RunRecorder {
    public let store: RunStore
    private let coordinator: ProcessIdentity
    private let loadgenVersion: String
    private let pending = Locked<[IntervalRecord]>([])
    private let failure = Locked<LoadgenError?>(nil)

    private init(store: RunStore, coordinator: ProcessIdentity, loadgenVersion: String) {
        self.store = store
        self.coordinator = coordinator
        self.loadgenVersion = loadgenVersion
    }

    /// Runs `body` with a recorder whose batch writer lives exactly as long as `body`.
    public static func with<R: Sendable>(store: RunStore, coordinator: ProcessIdentity, loadgenVersion: String,
                                         _ body: (StoreRecorder) async throws -> R) async throws -> R {
        let recorder = StoreRecorder(store: store, coordinator: coordinator, loadgenVersion: loadgenVersion)
        let flusher = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                await recorder.flush()
            }
        }
        do {
            let result = try await body(recorder)
            flusher.cancel()
            await recorder.flush()
            return result
        } catch {
            flusher.cancel()
            await recorder.flush()
            throw error
        }
    }

    /// Writes what is queued.
    func flush() async {
        let batch = self.pending.withLock { queued in
            defer { queued.removeAll(keepingCapacity: true) }
            return queued
        }
        guard !batch.isEmpty else { return }
        do {
            try await self.store.appendIntervals(batch, seenAtWallNanos: MonotonicClock.wallNanos())
        } catch {
            self.failure.withLock { if $0 == nil { $0 = error } }
        }
    }

    public func runStarted(_ request: RunRequest, agents: [ConnectedAgent], startedAtWallNanos: UInt64)
        async throws(LoadgenError)
    {
        let records = agents.map {
            AgentRecord(index: $0.index, agentID: $0.agentID, host: $0.host, address: $0.address, cores: $0.cores,
                        loadgenVersion: $0.loadgenVersion, rttNanos: $0.rttNanos, clockOffsetNanos: $0.clockOffsetNanos)
        }
        try await self.store.insertRun(request, agents: records, coordinator: self.coordinator,
                                       loadgenVersion: self.loadgenVersion, startedAtWallNanos: startedAtWallNanos)
    }

    public func intervalReceived(runID: String, agent: ConnectedAgent, interval: WireMessage.Interval,
                                 latency: IntervalLatency, receivedAtWallNanos: UInt64) {
        let record = IntervalRecord(runID: runID, agentIndex: agent.index, interval: interval,
                                    receivedAtWallNanos: receivedAtWallNanos, latency: latency)
        self.pending.withLock { $0.append(record) }
    }

    public func setStarted(id: String, kind: String, label: String?, workload: WorkloadKind, modes: [ExecutionMode],
                           requestJSON: String) async throws(LoadgenError) {
        try await self.store.insertSet(RunSetRecord(id: id, kind: kind, label: label, workload: workload.rawValue,
                                                    modes: modes.map(\.rawValue).joined(separator: ","),
                                                    startedAtWallNanos: MonotonicClock.wallNanos(), request: requestJSON))
    }

    public func setEnded(id: String, resultJSON: String) async throws(LoadgenError) {
        try await self.store.finishSet(id: id, result: resultJSON, endedAtWallNanos: MonotonicClock.wallNanos())
    }

    public func runEnded(_ report: RunReport, aggregate: RunAggregate) async throws(LoadgenError) {
        await self.flush()
        try await self.store.finishRun(report, aggregate: aggregate)
        if let failure = self.failure.withLock({ error in defer { error = nil }; return error }) {
            throw LoadgenError(.store, "Some interval reports of run \(report.runID) could not be stored: \(failure.message)")
        }
    }
}
