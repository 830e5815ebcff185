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
    /// What each target's requests send.
    let blueprints: [RequestBlueprint]
    /// Each target's request bytes, made once.
    let requests: [[UInt8]]
    /// `--expect-status` and `--expect-body`.
    let checks: ResponseChecks
    /// The TLS settings of the blocking clients, made when first needed (``OnceValue``).
    let tls: OnceValue<TLSContext>
    /// Where this run may connect, the agent's policy (nil: anywhere).
    public let destinations: DestinationPolicy?

    public init(spec: FetchSpec, destinations: DestinationPolicy? = nil) throws(LoadgenError) {
        self.spec = spec
        self.destinations = destinations
        var targets: [TargetURL] = []
        for url in spec.urls { targets.append(try TargetURL.parse(url)) }
        self.targets = targets
        self.blueprints = targets.indices.map { spec.blueprint(of: $0) }
        self.requests = zip(self.blueprints, targets).map { $0.bytes(for: $1) }
        self.checks = try ResponseChecks(spec: spec)
        // TLS is set up when it is needed: now for an https target or a CA file (so a bad one refuses the run), on
        // the first redirect to https otherwise.
        let (caFile, verify) = (spec.caFile, !spec.insecureTLS)
        self.tls = OnceValue { () throws(LoadgenError) in try TLSContext(caFile: caFile, verify: verify) }
        if self.needsTLSUpFront { _ = try self.tls.get() }
    }

    /// An https target or a CA file: TLS is set up before the run rather than on first use.
    var needsTLSUpFront: Bool { self.spec.caFile != nil || self.targets.contains(where: \.isTLS) }

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
                        pace: self.spec.rate.map { Pace(rate: $0, rampTo: self.spec.rampTo, durationNanos: self.spec.durationNanos) },
                        urlCount: UInt64(self.targets.count))
    }

    public func runWorker(share: Share, phase: Phase, control: WorkerControl, sink: any TallySink) -> WorkerResult {
        let client = BlockingHTTPClient(timeoutNanos: self.spec.timeoutNanos, tls: self.tls, destinations: self.destinations,
                                        checks: self.checks, keepAlive: self.spec.keepAlive)
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
            case .send(let urlIndex, let start, let lag):
                if let lag { counts.recordLag(lag) }
                let result = client.fetch(self.targets[urlIndex], blueprint: self.blueprints[urlIndex],
                                          request: self.requests[urlIndex], startNanos: start)
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

/// When request `i` falls due under `--rate`, from the start: `i / rate`, or with `--ramp-to` on a rate that moves
/// linearly from `rate` to `rampTo` over the duration, the time at which the requests due so far,
/// `rate·t + (rampTo - rate)·t² / 2D`, reach `i`.
struct Pace: Equatable {
    /// Requests per second at the start.
    let rate: Double
    /// Half the rate's change per second, per second: `(rampTo - rate) / 2D` (zero at a steady rate).
    let halfSlope: Double
    /// Nanoseconds between requests at a steady rate.
    private let interval: Double

    init(rate: Double, rampTo: Double? = nil, durationNanos: UInt64? = nil) {
        self.rate = rate
        self.interval = 1e9 / rate
        if let rampTo, let durationNanos, durationNanos > 0 {
            self.halfSlope = (rampTo - rate) / (2 * Double(durationNanos) / 1e9)
        } else {
            self.halfSlope = 0
        }
    }

    /// Nanoseconds from the start to request `index`'s due time; nil when a falling rate never gets there.
    func dueNanos(_ index: UInt64) -> UInt64? {
        let i = Double(index)
        if self.halfSlope == 0 { return UInt64(i * self.interval) }
        // The root of halfSlope·t² + rate·t - i = 0, in the form that stays exact when halfSlope is small.
        let discriminant = self.rate * self.rate + 4 * self.halfSlope * i
        guard discriminant >= 0 else { return nil }
        return UInt64(2 * i / (self.rate + discriminant.squareRoot()) * 1e9)
    }
}

/// The requests one worker (or async slot) sends, in order: the indices of its share, request `i` to URL
/// `i mod urls`; under `--rate`, each at its due time (see ``Pace``), and none due at or after the deadline.
struct RequestSchedule {
    let share: Share
    let startAtNanos: UInt64
    let deadline: UInt64?
    /// Due times under `--rate` (nil: a closed loop).
    let pace: Pace?
    let urlCount: UInt64
    /// Requests sent so far.
    private(set) var sent: UInt64 = 0

    enum Step: Equatable {
        /// The share is done, or the deadline has come.
        case done
        /// The next request falls due at this instant.
        case wait(untilNanos: UInt64)
        /// Send a request to this URL now; its latency runs from `startNanos` (its due time under `--rate`), and
        /// under `--rate` it started `lag` after that.
        case send(urlIndex: Int, startNanos: UInt64, lag: ScheduleLag?)
    }

    /// What to do at `now`; a `send` moves the plan on by one request.
    mutating func step(now: UInt64) -> Step {
        if let count = self.share.count, self.sent >= count { return .done }
        let index = self.share.first &+ self.sent &* self.share.stride
        var start = now
        var lag: ScheduleLag?
        if let pace = self.pace {
            guard let offset = pace.dueNanos(index) else { return .done }
            let due = self.startAtNanos &+ offset
            if let deadline = self.deadline, due >= deadline || now >= deadline { return .done }
            if due > now { return .wait(untilNanos: due) }
            start = due
            lag = ScheduleLag(nanos: now &- due)
        } else if let deadline = self.deadline, now >= deadline {
            return .done
        }
        self.sent &+= 1
        return .send(urlIndex: Int(index % self.urlCount), startNanos: start, lag: lag)
    }
}

extension Tally {
    /// Counts one request: a response (by status class, with its body bytes and per-URL latency) or a failure of one
    /// kind. True for a response, whose latency the caller then records (``TickedTally/recordLatency(_:)``).
    @inline(__always)
    mutating func count(_ result: Result<FetchResponse, FetchFailure>, urlIndex: Int, latencyNanos: UInt64) -> Bool {
        switch result {
        case .success(let response):
            let statusClass = min(max(response.status / 100, 1), 5) - 1
            if let rejection = response.rejection {
                self.statusClasses[statusClass] &+= 1
                self.redirects &+= UInt64(response.redirects)
                self.targets[urlIndex].statusClasses[statusClass] &+= 1
                self.recordError(rejection.kind, rejection.message)
                self.targets[urlIndex].errors &+= 1
                return false
            }
            self.ops &+= 1
            self.bytes &+= response.bodyBytes
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
