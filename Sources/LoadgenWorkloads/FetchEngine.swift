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

    /// Nanoseconds between due times under `--rate`.
    var dueIntervalNanos: Double? { self.spec.rate.map { 1e9 / $0 } }

    public func runWorker(share: Share, phase: Phase, control: WorkerControl, sink: any TallySink) -> WorkerResult {
        let client = BlockingHTTPClient(timeoutNanos: self.spec.timeoutNanos, tls: self.tls)
        let stop = control.stop
        let urlCount = UInt64(self.targets.count)
        let deadline = self.spec.durationNanos.map { control.startAtNanos &+ $0 }
        let dueInterval = self.dueIntervalNanos
        var tally = Tally(targetCount: self.targets.count)
        MonotonicClock.sleep(untilNanos: control.startAtNanos)
        var nextTick = control.nextTick(after: MonotonicClock.nowNanos())
        var k: UInt64 = 0
        while true {
            if stop.isRequested { break }
            if let count = share.count, k >= count { break }
            let index = share.first &+ k &* share.stride
            var start = MonotonicClock.nowNanos()
            if let dueInterval {
                let due = control.startAtNanos &+ UInt64(Double(index) * dueInterval)
                if let deadline, due >= deadline { break }
                if due > start {
                    // Sleep towards the due time in slices, so a stop is still seen within 100 ms.
                    while due > MonotonicClock.nowNanos(), !stop.isRequested {
                        MonotonicClock.sleep(untilNanos: min(due, MonotonicClock.nowNanos() &+ 100_000_000))
                    }
                    if stop.isRequested { break }
                }
                start = due
            } else if let deadline, start >= deadline {
                break
            }
            let urlIndex = Int(index % urlCount)
            let result = client.fetch(self.targets[urlIndex], method: self.spec.method, request: self.requests[urlIndex],
                                      startNanos: start)
            let end = MonotonicClock.nowNanos()
            tally.record(result, urlIndex: urlIndex, latencyNanos: end &- start)
            if end >= nextTick {
                sink.handOver(tally)
                tally = Tally(targetCount: self.targets.count)
                nextTick = control.nextTick(after: end)
            }
            k &+= 1
        }
        let done = MonotonicClock.nowNanos()
        sink.handOver(tally)
        return WorkerResult(doneAtNanos: done)
    }
}

extension Tally {
    /// Counts one request: a response (by status class, with its latency and body bytes) or a failure of one kind.
    @inline(__always)
    mutating func record(_ result: Result<FetchResponse, FetchFailure>, urlIndex: Int, latencyNanos: UInt64) {
        switch result {
        case .success(let response):
            self.ops &+= 1
            self.bytes &+= response.bodyBytes
            self.recordLatency(latencyNanos)
            let statusClass = min(max(response.status / 100, 1), 5) - 1
            self.statusClasses[statusClass] &+= 1
            self.redirects &+= UInt64(response.redirects)
            self.targets[urlIndex].ops &+= 1
            self.targets[urlIndex].bytes &+= response.bodyBytes
            self.targets[urlIndex].latencyNanosSum &+= latencyNanos
            self.targets[urlIndex].latencyNanosMax = Swift.max(self.targets[urlIndex].latencyNanosMax, latencyNanos)
            self.targets[urlIndex].statusClasses[statusClass] &+= 1
        case .failure(let failure):
            self.recordError(failure.kind, failure.message)
            self.targets[urlIndex].errors &+= 1
        }
    }
}
