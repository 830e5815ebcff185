import LoadgenCore

/// The fetch workload for the modes where each worker is a thread (sequential, threads, and each worker process):
/// a blocking request loop over the URL list.
///
/// Request `i` goes to URL `i mod urls`; workers take interleaved indices (see ``Share``). Without `--rate` it is a
/// closed loop: a worker sends its next request when the last one finished, and latency runs from send to the end
/// of the response. With `--rate R`, request `i` is due at `start + i / R` (an open model): the worker waits for
/// the due time, or sends at once when it is late, and latency runs from the due time, so a stalled server shows in
/// the percentiles even though every worker was stuck waiting on it.
public final class FetchEngine: WorkloadEngine {
    public let spec: FetchSpec
    public let targets: [TargetURL]
    /// Each target's request bytes, made once.
    let requests: [[UInt8]]
    let tls: TLSContext?

    public init(spec: FetchSpec) throws(LoadgenError) {
        self.spec = spec
        var targets: [TargetURL] = []
        for url in spec.urls { targets.append(try TargetURL.parse(url)) }
        self.targets = targets
        self.requests = targets.map { HTTPRequestBytes.make(method: spec.method, target: $0) }
        // TLS is set up whenever it might be needed: an https target, or a redirect to one.
        self.tls = try TLSContext(caFile: spec.caFile, verify: !spec.insecureTLS)
    }

    public func totalOperations(phase: Phase) -> UInt64? {
        self.spec.totalRequests.map(UInt64.init)
    }

    public func share(phase: Phase, worker: Int, of workers: Int) -> Share {
        Share.interleaved(total: self.totalOperations(phase: phase), workers: workers, worker: worker)
    }

    public func finishPhase(_ phase: Phase) -> String? { nil }

    /// The request plan of one worker (or async slot) with this share.
    func schedule(share: Share, control: WorkerControl) -> RequestSchedule {
        RequestSchedule(share: share, startAtNanos: control.startAtNanos,
                        deadline: self.spec.durationNanos.map { control.startAtNanos &+ $0 },
                        dueInterval: self.spec.rate.map { 1e9 / $0 }, urlCount: UInt64(self.targets.count))
    }

    public func runWorker(share: Share, phase: Phase, control: WorkerControl, sink: any TallySink) -> WorkerResult {
        let client = BlockingHTTPClient(timeoutNanos: self.spec.timeoutNanos, tls: self.tls)
        let stop = control.stop
        var schedule = self.schedule(share: share, control: control)
        MonotonicClock.sleep(untilNanos: control.startAtNanos)
        var counts = TickedTally(control: control, targetCount: self.targets.count)
        requests: while !stop.isRequested {
            switch schedule.step(now: MonotonicClock.nowNanos()) {
            case .done:
                break requests
            case .wait(let due):
                // Sleep towards the due time in slices, so a stop is still seen within 100 ms.
                MonotonicClock.sleep(untilNanos: min(due, MonotonicClock.nowNanos() &+ 100_000_000))
            case .send(let urlIndex, let start):
                let result = client.fetch(self.targets[urlIndex], method: self.spec.method, request: self.requests[urlIndex],
                                          startNanos: start)
                let end = MonotonicClock.nowNanos()
                counts.record(result, urlIndex: urlIndex, latencyNanos: end &- start)
                counts.tick(end, to: sink)
            }
        }
        let done = MonotonicClock.nowNanos()
        counts.handOver(to: sink)
        return WorkerResult(doneAtNanos: done)
    }
}

/// The requests one worker (or async slot) sends, in order: the indices of its share, request `i` to URL
/// `i mod urls`; under `--rate`, each at its due time `start + i / rate`, and none due at or after the deadline.
struct RequestSchedule {
    let share: Share
    let startAtNanos: UInt64
    let deadline: UInt64?
    /// Nanoseconds between due times under `--rate`.
    let dueInterval: Double?
    let urlCount: UInt64
    /// Requests sent so far.
    private var k: UInt64 = 0

    init(share: Share, startAtNanos: UInt64, deadline: UInt64?, dueInterval: Double?, urlCount: UInt64) {
        self.share = share
        self.startAtNanos = startAtNanos
        self.deadline = deadline
        self.dueInterval = dueInterval
        self.urlCount = urlCount
    }

    enum Step: Equatable {
        /// The share is done, or the deadline has come.
        case done
        /// The next request falls due at this instant.
        case wait(untilNanos: UInt64)
        /// Send a request to this URL now; its latency runs from `startNanos` (its due time under `--rate`).
        case send(urlIndex: Int, startNanos: UInt64)
    }

    /// What to do at `now`; a `send` moves the plan on by one request.
    mutating func step(now: UInt64) -> Step {
        if let count = self.share.count, self.k >= count { return .done }
        let index = self.share.first &+ self.k &* self.share.stride
        var start = now
        if let dueInterval = self.dueInterval {
            let due = self.startAtNanos &+ UInt64(Double(index) * dueInterval)
            if let deadline = self.deadline, due >= deadline { return .done }
            if due > now { return .wait(untilNanos: due) }
            start = due
        } else if let deadline = self.deadline, now >= deadline {
            return .done
        }
        self.k &+= 1
        return .send(urlIndex: Int(index % self.urlCount), startNanos: start)
    }
}

extension Tally {
    /// Counts one request: a response (by status class, with its body bytes and per-URL latency) or a failure of one
    /// kind. True for a response, whose latency the caller then records (``TickedTally/recordLatency(_:)``).
    @inline(__always)
    mutating func count(_ result: Result<FetchResponse, FetchFailure>, urlIndex: Int, latencyNanos: UInt64) -> Bool {
        switch result {
        case .success(let response):
            self.ops &+= 1
            self.bytes &+= response.bodyBytes
            let statusClass = min(max(response.status / 100, 1), 5) - 1
            self.statusClasses[statusClass] &+= 1
            self.redirects &+= UInt64(response.redirects)
            self.targets[urlIndex].ops &+= 1
            self.targets[urlIndex].bytes &+= response.bodyBytes
            self.targets[urlIndex].latencyNanosSum &+= latencyNanos
            self.targets[urlIndex].latencyNanosMax = Swift.max(self.targets[urlIndex].latencyNanosMax, latencyNanos)
            self.targets[urlIndex].statusClasses[statusClass] &+= 1
            return true
        case .failure(let failure):
            self.recordError(failure.kind, failure.message)
            self.targets[urlIndex].errors &+= 1
            return false
        }
    }
}
