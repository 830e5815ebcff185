import CLoadgen
import COpenSSL
import Glibc
import LoadgenCore
import NIOCore

/// `async` mode for HTTP/1.1 fetches: `workers` keep-alive connections, each a slot with one request in flight, driven
/// by one epoll loop per 32 slots (at most one per core), with no thread, task or future per request.
///
/// The same plan as the blocking engine (``FetchEngine``): interleaved request indices, a closed loop or, with
/// `--rate`, due times with latency measured from them; the same response parser, redirects, stale keep-alive retries,
/// checks, accounting and TLS (the system's OpenSSL, as non-blocking sessions). A request costs a `send`, a `recv` and
/// a share of an `epoll_wait`; SwiftNIO's channel pipeline cost about four times wrk's user time per request here
/// (perf: NIO's reads, writes, futures and runtime metadata lookups), so HTTP/1.1 no longer goes through it.
public final class AsyncFetchExecutor: PhaseExecutor {
    let engine: FetchEngine
    let slots: Int

    public init(engine: FetchEngine, slots: Int) {
        self.engine = engine
        self.slots = slots
    }

    /// Loops for `slots` connections: one per 32 connections, at most one per core. A loop keeps far more than 32
    /// keep-alive connections busy (each request costs it a few microseconds), and every extra loop thread that
    /// sleeps and wakes in epoll costs context switches on the cores the server under test may share.
    static func loopCount(slots: Int, cores: Int) -> Int {
        max(1, min(cores, (slots + 31) / 32))
    }

    public func runPhase(_ phase: Phase, control: WorkerControl, mailbox: TallyMailbox) async -> [WorkerResult] {
        let loops = Self.loopCount(slots: self.slots, cores: System.coreCount)
        let (engine, slots) = (self.engine, self.slots)
        // Slots are dealt round-robin: loop l runs slots l, l + loops, l + 2·loops, ...
        let done = await WorkerThreads.run(count: loops, name: "lg-fetch") { l in
            var loop = FetchLoop(engine: engine, phase: phase, slots: Array(stride(from: l, to: slots, by: loops)), of: slots,
                                 control: control, sink: mailbox)
            return loop.run()
        }
        var results = [WorkerResult](repeating: WorkerResult(doneAtNanos: nil), count: slots)
        for (l, ended) in done.enumerated() {
            for (k, result) in ended.enumerated() { results[l + k * loops] = result }
        }
        return results
    }
}

/// Slots' wake-up times (a due time under `--rate`, a request's deadline), each slot at most once: a min-heap with
/// each slot's place kept, so arming a slot earlier moves it up and nothing stale piles up. Arming later than what is
/// armed leaves the earlier time, which then fires early and is re-armed by the slot (as a request's deadline moves on
/// with every request, that is one heap operation per timeout, not per request).
struct SlotTimers {
    private var heap: [(at: UInt64, slot: Int32)] = []
    private var place: [Int32]

    init(slots: Int) {
        self.place = Array(repeating: -1, count: slots)
    }

    var earliest: UInt64? { self.heap.first?.at }

    mutating func arm(_ slot: Int, at: UInt64) {
        var i = Int(self.place[slot])
        if i >= 0 {
            guard at < self.heap[i].at else { return }
            self.heap[i].at = at
        } else {
            i = self.heap.count
            self.heap.append((at, Int32(slot)))
            self.place[slot] = Int32(i)
        }
        while i > 0 {
            let parent = (i - 1) / 2
            guard self.heap[parent].at > self.heap[i].at else { break }
            self.swapAt(i, parent)
            i = parent
        }
    }

    /// The slot whose time is at or before `now`, taken off the heap; nil when none is.
    mutating func takeDue(now: UInt64) -> Int? {
        guard let first = self.heap.first, first.at <= now else { return nil }
        let last = self.heap.count - 1
        self.swapAt(0, last)
        self.heap.removeLast()
        self.place[Int(first.slot)] = -1
        var i = 0
        while true {
            let (left, right) = (2 * i + 1, 2 * i + 2)
            var smallest = i
            if left < self.heap.count, self.heap[left].at < self.heap[smallest].at { smallest = left }
            if right < self.heap.count, self.heap[right].at < self.heap[smallest].at { smallest = right }
            if smallest == i { break }
            self.swapAt(i, smallest)
            i = smallest
        }
        return Int(first.slot)
    }

    private mutating func swapAt(_ a: Int, _ b: Int) {
        guard a != b else { return }
        self.heap.swapAt(a, b)
        self.place[Int(self.heap[a].slot)] = Int32(a)
        self.place[Int(self.heap[b].slot)] = Int32(b)
    }
}

/// One epoll loop and its slots, run on one thread from start to end: a struct, so nothing in it is shared, locked or
/// checked for exclusive access at run time.
struct FetchLoop {
    private struct Origin: Hashable {
        var isTLS: Bool
        var host: String
        var port: Int
    }

    private enum Connection {
        case none
        /// A non-blocking connect to the origin's address at this index is under way.
        case connecting(Int)
        case handshaking
        case open
    }

    private enum Request {
        /// Nothing in flight (the next may be waiting for its due time).
        case idle
        case writing
        case reading
    }

    private struct Slot {
        var schedule: RequestSchedule
        var finished = false
        var result = WorkerResult(doneAtNanos: nil)

        var fd: Int32 = -1
        var ssl: OpaquePointer?
        /// Bumped with every new connection: epoll events carry it, so one left over from a closed socket is ignored.
        var generation: UInt32 = 0
        var connection = Connection.none
        var origin = -1
        var interest: UInt32 = 0
        /// The connection has carried a request; `reused`: it had before the current one (a failure before any byte
        /// of the response is then a stale keep-alive, sent again once).
        var used = false
        var reused = false
        var connectError: Int32 = 0

        var request = Request.idle
        var busy = false
        var urlIndex = 0
        var start: UInt64 = 0
        var deadline: UInt64 = 0
        /// Waiting for the schedule until this instant (0: not waiting).
        var due: UInt64 = 0
        /// The request after a redirect changed it (nil: the target's own).
        var hop: Redirect.Hop?
        var redirects = 0
        var isHead = false
        var replayable = false
        var retried = false
        var written = 0
        var parser = HTTPResponseParser()
    }

    private let control: WorkerControl
    private let sink: any TallySink
    private let timeoutNanos: UInt64
    private let keepAlive: Bool
    private let checks: ResponseChecks
    private let tls: OnceValue<TLSContext>
    private let destinations: DestinationPolicy?
    private let targets: [TargetURL]
    private let blueprints: [RequestBlueprint]
    private let targetOrigins: [Int]
    /// Each target's request bytes, copied once into memory of the loop's own.
    private let requests: [UnsafeRawBufferPointer]

    private var origins: [Origin: Int] = [:]
    private var originTargets: [TargetURL] = []
    /// Each origin's allowed addresses, once resolved.
    private var resolved: [Int: [(family: Int32, address: [UInt8])]] = [:]

    /// The slots, in memory of the loop's own: each is read and changed where it lies (an array's element would be
    /// copied whole by some reads).
    private let slots: UnsafeMutablePointer<Slot>
    private let slotCount: Int
    /// Each target's: whether its requests are HEADs, and whether they are safe to send again.
    private let isHead: [Bool]
    private let replayable: [Bool]
    private var timers: SlotTimers
    /// Slots whose request ended, to start their next from the loop (not from inside the last one's handling: a run of
    /// requests that fail at once must not recurse).
    private var ready: [(slot: Int, now: UInt64)] = []
    private var active: Int
    private var counts: TickedTally
    private let epoll: Int32
    private let buffer: UnsafeMutableRawBufferPointer

    init(engine: FetchEngine, phase: Phase, slots indices: [Int], of total: Int, control: WorkerControl, sink: any TallySink) {
        self.control = control
        self.sink = sink
        self.timeoutNanos = engine.spec.timeoutNanos
        self.keepAlive = engine.spec.keepAlive
        self.checks = engine.checks
        self.tls = engine.tls
        self.destinations = engine.destinations
        self.targets = engine.targets
        self.blueprints = engine.blueprints
        self.requests = engine.requests.map { bytes in
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
            bytes.withUnsafeBytes { copy.copyMemory(from: $0) }
            return UnsafeRawBufferPointer(rebasing: copy[0..<bytes.count])
        }
        self.slotCount = indices.count
        self.slots = UnsafeMutablePointer<Slot>.allocate(capacity: max(indices.count, 1))
        for (k, index) in indices.enumerated() {
            (self.slots + k).initialize(to: Slot(schedule: engine.schedule(share: engine.share(phase: phase, worker: index, of: total),
                                                                           control: control)))
        }
        self.isHead = engine.blueprints.map(\.isHead)
        self.replayable = engine.blueprints.map(\.isReplayable)
        self.timers = SlotTimers(slots: indices.count)
        self.active = indices.count
        self.counts = TickedTally(control: control, targetCount: engine.targets.count)
        self.epoll = lg_epoll_create()
        self.buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        var origins: [Origin: Int] = [:]
        var originTargets: [TargetURL] = []
        self.targetOrigins = engine.targets.map { target in
            Self.originID(target, origins: &origins, targets: &originTargets)
        }
        self.origins = origins
        self.originTargets = originTargets
    }

    private static func originID(_ target: TargetURL, origins: inout [Origin: Int], targets: inout [TargetURL]) -> Int {
        let key = Origin(isTLS: target.isTLS, host: target.host, port: target.port)
        if let id = origins[key] { return id }
        origins[key] = targets.count
        targets.append(target)
        return targets.count - 1
    }

    private mutating func originID(_ target: TargetURL) -> Int {
        Self.originID(target, origins: &self.origins, targets: &self.originTargets)
    }

    /// Runs every slot's share to its end (or a stop) and returns how each ended, in the order of the slots given.
    mutating func run() -> [WorkerResult] {
        defer {
            for request in self.requests { request.deallocate() }
            self.slots.deinitialize(count: self.slotCount)
            self.slots.deallocate()
            self.buffer.deallocate()
            if self.epoll >= 0 { close(self.epoll) }
        }
        if self.epoll < 0 {
            // Without a loop no request can be made: each slot ends at once, with the reason.
            let failure = "an epoll instance could not be made: \(errnoDescription(-self.epoll))"
            return (0..<self.slotCount).map { _ in WorkerResult(doneAtNanos: MonotonicClock.nowNanos(), failure: failure) }
        }
        MonotonicClock.sleep(untilNanos: self.control.startAtNanos)
        let start = MonotonicClock.nowNanos()
        for i in 0..<self.slotCount { self.ready.append((i, start)) }
        let capacity = 256
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: capacity)
        defer { events.deallocate() }
        while self.active > 0 {
            if self.control.stop.isRequested {
                self.abortAll()
                break
            }
            // Slots ready for their next request, a bounded batch so timers, events and the stop are seen in between.
            var batch = 0
            while batch < 4 * self.slotCount + 16, let (slot, now) = self.ready.popLast() {
                self.next(slot, now: now)
                batch += 1
            }
            var now = MonotonicClock.nowNanos()
            while let slot = self.timers.takeDue(now: now) {
                self.timerFired(slot, now: now)
            }
            guard self.active > 0 else { break }
            now = MonotonicClock.nowNanos()
            // Wait for events until the earliest timer (at most 50 ms, to see a stop), not at all with slots ready.
            var wait: Int64 = self.ready.isEmpty ? 50_000_000 : 0
            if let earliest = self.timers.earliest { wait = min(wait, earliest > now ? Int64(earliest - now) : 0) }
            // epoll_pwait2 waits to the nanosecond: a due time under `--rate` is kept to within microseconds, not rounded
            // up to a millisecond.
            let n = Int(lg_epoll_wait_ns(self.epoll, events, Int32(capacity), wait))
            for e in 0..<max(n, 0) {
                let data = lg_epoll_event_data(events, Int32(e))
                let slot = Int(truncatingIfNeeded: data & 0xffff_ffff)
                guard slot < self.slotCount, self.slots[slot].fd >= 0,
                      self.slots[slot].generation == UInt32(truncatingIfNeeded: data >> 32) else { continue }
                self.handle(slot)
            }
        }
        self.counts.handOver(to: self.sink)
        return (0..<self.slotCount).map { self.slots[$0].result }
    }

    // MARK: - The request plan

    private mutating func next(_ i: Int, now: UInt64) {
        guard !self.slots[i].finished else { return }
        if self.control.stop.isRequested { return self.finish(i, now: now) }
        switch self.slots[i].schedule.step(now: now) {
        case .done:
            self.finish(i, now: now)
        case .wait(let due):
            self.slots[i].due = due
            self.timers.arm(i, at: due)
        case .send(let urlIndex, let start, let lag):
            if let lag { self.counts.recordLag(lag) }
            let isHead = self.isHead[urlIndex]
            self.slots[i].due = 0
            self.slots[i].busy = true
            self.slots[i].urlIndex = urlIndex
            self.slots[i].start = start
            self.slots[i].deadline = start &+ self.timeoutNanos
            self.slots[i].hop = nil
            self.slots[i].redirects = 0
            self.slots[i].isHead = isHead
            self.slots[i].replayable = self.replayable[urlIndex]
            self.slots[i].retried = false
            self.slots[i].parser = HTTPResponseParser(isHead: isHead, expectation: self.checks.body)
            self.timers.arm(i, at: self.slots[i].deadline)
            self.send(i)
        }
    }

    private mutating func timerFired(_ i: Int, now: UInt64) {
        guard !self.slots[i].finished else { return }
        if self.slots[i].busy {
            if now >= self.slots[i].deadline { return self.timedOut(i) }
            self.timers.arm(i, at: self.slots[i].deadline)
        } else if self.slots[i].due != 0 {
            if now >= self.slots[i].due { return self.next(i, now: now) }
            self.timers.arm(i, at: self.slots[i].due)
        }
    }

    private mutating func finish(_ i: Int, now: UInt64) {
        guard !self.slots[i].finished else { return }
        self.dropConnection(i)
        self.slots[i].finished = true
        self.slots[i].busy = false
        self.slots[i].result = WorkerResult(doneAtNanos: now)
        self.active -= 1
    }

    /// A stop (abort, lost coordinator): every connection closed at once, requests in flight not counted.
    private mutating func abortAll() {
        let now = MonotonicClock.nowNanos()
        for i in 0..<self.slotCount { self.finish(i, now: now) }
    }

    /// Counts the current request and readies the slot's next.
    private mutating func complete(_ i: Int, _ result: Result<FetchResponse, FetchFailure>, dropConnection: Bool) {
        guard self.slots[i].busy else { return }
        self.slots[i].busy = false
        self.slots[i].request = .idle
        self.slots[i].hop = nil
        if dropConnection { self.dropConnection(i) }
        let end = MonotonicClock.nowNanos()
        self.counts.record(result, urlIndex: self.slots[i].urlIndex, latencyNanos: end &- self.slots[i].start)
        self.counts.tick(end, to: self.sink)
        self.ready.append((i, end))
    }

    private mutating func timedOut(_ i: Int) {
        let target = self.currentTarget(i)
        let message = switch (self.slots[i].connection, self.slots[i].request) {
        case (.connecting, _): "connecting to \(target.host):\(target.port) took longer than the timeout"
        case (.handshaking, _): "the TLS handshake with \(target.host) took longer than the timeout"
        case (_, .writing): "sending the request took longer than the timeout"
        default: "the response took longer than the timeout"
        }
        self.complete(i, .failure(FetchFailure(.timeout, message)), dropConnection: true)
    }

    private func currentTarget(_ i: Int) -> TargetURL {
        self.slots[i].hop?.target ?? self.targets[self.slots[i].urlIndex]
    }

    // MARK: - Connections

    /// Sends the current request on a connection to its origin, connecting first when needed.
    private mutating func send(_ i: Int) {
        let origin: Int
        if let hop = self.slots[i].hop { origin = self.originID(hop.target) } else { origin = self.targetOrigins[self.slots[i].urlIndex] }
        if case .open = self.slots[i].connection, self.slots[i].origin == origin {
            return self.startWrite(i)
        }
        self.dropConnection(i)
        if self.resolved[origin] == nil {
            switch BlockingHTTPClient.addresses(of: self.originTargets[origin], destinations: self.destinations) {
            case .success(let allowed): self.resolved[origin] = allowed
            case .failure(let failure): return self.complete(i, .failure(failure), dropConnection: true)
            }
        }
        self.slots[i].origin = origin
        self.slots[i].connectError = ECONNREFUSED
        self.connect(i, from: 0)
    }

    /// Tries the origin's addresses from `first` on, in order, until a connect starts.
    private mutating func connect(_ i: Int, from first: Int) {
        let addresses = self.resolved[self.slots[i].origin] ?? []
        var index = first
        while index < addresses.count {
            let (fd, status) = BlockingHTTPClient.startConnect(to: addresses[index])
            guard fd >= 0 else {
                self.slots[i].connectError = status
                index += 1
                continue
            }
            self.slots[i].fd = fd
            self.slots[i].generation &+= 1
            self.slots[i].used = false
            let interest = status == 0 ? LG_EPOLLIN : LG_EPOLLOUT
            let added = lg_epoll_ctl(self.epoll, LG_EPOLL_CTL_ADD, fd, interest, self.cookie(i))
            guard added == 0 else {
                self.slots[i].connectError = -added
                self.closeSocket(i)
                index += 1
                continue
            }
            self.slots[i].interest = interest
            if status == 0 { return self.connected(i) }
            self.slots[i].connection = .connecting(index)
            return
        }
        let target = self.originTargets[self.slots[i].origin]
        self.complete(i, .failure(FetchFailure(.connect, "connecting to \(target.host):\(target.port) failed: \(errnoDescription(self.slots[i].connectError))")),
                      dropConnection: true)
    }

    private mutating func connectFinished(_ i: Int, address: Int) {
        var soError: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(self.slots[i].fd, SOL_SOCKET, SO_ERROR, &soError, &length)
        if soError == EINPROGRESS { return }
        if soError != 0 {
            self.slots[i].connectError = soError
            self.closeSocket(i)
            return self.connect(i, from: address + 1)
        }
        self.connected(i)
    }

    private mutating func connected(_ i: Int) {
        let target = self.originTargets[self.slots[i].origin]
        guard target.isTLS else {
            self.slots[i].connection = .open
            return self.startWrite(i)
        }
        let context: TLSContext
        do throws(LoadgenError) {
            context = try self.tls.get()
        } catch {
            return self.complete(i, .failure(FetchFailure(.tls, "TLS could not be set up for \(target): \(error.message)")),
                                 dropConnection: true)
        }
        switch BlockingHTTPClient.session(fd: self.slots[i].fd, host: target.host, tls: context) {
        case .success(let ssl):
            self.slots[i].ssl = ssl
            self.slots[i].connection = .handshaking
            self.handshake(i)
        case .failure(let failure):
            self.complete(i, .failure(failure), dropConnection: true)
        }
    }

    private mutating func handshake(_ i: Int) {
        guard let ssl = self.slots[i].ssl else { return }
        let result = SSL_connect(ssl)
        if result == 1 {
            self.slots[i].connection = .open
            return self.startWrite(i)
        }
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ: self.setInterest(i, LG_EPOLLIN)
        case SSL_ERROR_WANT_WRITE: self.setInterest(i, LG_EPOLLOUT)
        default:
            let failure = BlockingHTTPClient.handshakeFailure(ssl, host: self.originTargets[self.slots[i].origin].host)
            self.complete(i, .failure(failure), dropConnection: true)
        }
    }

    private mutating func setInterest(_ i: Int, _ interest: UInt32) {
        guard self.slots[i].interest != interest else { return }
        if lg_epoll_ctl(self.epoll, LG_EPOLL_CTL_MOD, self.slots[i].fd, interest, self.cookie(i)) == 0 {
            self.slots[i].interest = interest
        }
    }

    /// What epoll hands back with a slot's events: the slot, and its connection's generation.
    private func cookie(_ i: Int) -> UInt64 {
        UInt64(i) | UInt64(self.slots[i].generation) << 32
    }

    /// Closes the socket (which leaves the epoll set) without touching the request.
    private mutating func closeSocket(_ i: Int) {
        if let ssl = self.slots[i].ssl {
            SSL_shutdown(ssl)
            SSL_free(ssl)
            self.slots[i].ssl = nil
        }
        if self.slots[i].fd >= 0 { close(self.slots[i].fd) }
        self.slots[i].fd = -1
        self.slots[i].interest = 0
        self.slots[i].connection = .none
        self.slots[i].used = false
    }

    private mutating func dropConnection(_ i: Int) {
        self.closeSocket(i)
        self.slots[i].origin = -1
    }

    // MARK: - Events

    private mutating func handle(_ i: Int) {
        switch self.slots[i].connection {
        case .none: return
        case .connecting(let address): return self.connectFinished(i, address: address)
        case .handshaking: return self.handshake(i)
        case .open: break
        }
        switch self.slots[i].request {
        case .writing: self.write(i)
        case .reading: self.read(i)
        case .idle: self.idleEvent(i)
        }
    }

    private mutating func startWrite(_ i: Int) {
        self.slots[i].reused = self.slots[i].used
        self.slots[i].used = true
        self.slots[i].request = .writing
        self.slots[i].written = 0
        self.write(i)
    }

    private mutating func write(_ i: Int) {
        if let hop = self.slots[i].hop {
            hop.request.withUnsafeBytes { bytes in self.write(i, bytes) }
        } else {
            self.write(i, self.requests[self.slots[i].urlIndex])
        }
    }

    private mutating func write(_ i: Int, _ bytes: UnsafeRawBufferPointer) {
        let fd = self.slots[i].fd
        while self.slots[i].written < bytes.count {
            let pointer = bytes.baseAddress! + self.slots[i].written
            let left = bytes.count - self.slots[i].written
            if let ssl = self.slots[i].ssl {
                let n = SSL_write(ssl, pointer, Int32(left))
                if n > 0 {
                    self.slots[i].written += Int(n)
                    continue
                }
                switch SSL_get_error(ssl, n) {
                case SSL_ERROR_WANT_READ: return self.setInterest(i, LG_EPOLLIN)
                case SSL_ERROR_WANT_WRITE: return self.setInterest(i, LG_EPOLLOUT)
                default: return self.writeFailed(i, FetchFailure(.write, "writing the request failed: \(TLSContext.lastError())"))
                }
            }
            let n = Glibc.send(fd, pointer, left, Int32(MSG_NOSIGNAL))
            if n > 0 {
                self.slots[i].written += n
                continue
            }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return self.setInterest(i, LG_EPOLLOUT) }
            return self.writeFailed(i, FetchFailure(.write, "writing the request failed: \(errnoDescription(e))"))
        }
        self.slots[i].request = .reading
        self.setInterest(i, LG_EPOLLIN)
    }

    /// As the blocking client: a failed write on a reused connection is sent again once, on a fresh connection.
    private mutating func writeFailed(_ i: Int, _ failure: FetchFailure) {
        if self.slots[i].reused, !self.slots[i].retried { return self.retry(i) }
        self.complete(i, .failure(failure), dropConnection: true)
    }

    /// A read failure on a reused connection before any byte of the response, for a request safe to repeat (Go's
    /// rule), is a stale keep-alive: sent again once.
    private mutating func readFailed(_ i: Int, _ failure: FetchFailure) {
        if self.slots[i].reused, !self.slots[i].retried, self.slots[i].replayable, !self.slots[i].parser.started,
           failure.kind == .read {
            return self.retry(i)
        }
        self.complete(i, .failure(failure), dropConnection: true)
    }

    private mutating func retry(_ i: Int) {
        self.slots[i].retried = true
        self.dropConnection(i)
        self.slots[i].request = .idle
        self.slots[i].parser = HTTPResponseParser(isHead: self.slots[i].isHead, expectation: self.checks.body)
        self.send(i)
    }

    /// What a read gave the parser.
    private enum Fed {
        case partial
        case response(HTTPResponseParser.Response, extraBytes: Bool)
        case malformed(String)
    }

    private mutating func feed(_ i: Int, _ count: Int) -> Fed {
        do throws(HTTPResponseParser.Failure) {
            let (consumed, response) = try self.slots[i].parser.feed(UnsafeRawBufferPointer(rebasing: self.buffer[0..<count]))
            guard let response else { return .partial }
            return .response(response, extraBytes: consumed < count)
        } catch {
            switch error { case .malformed(let text): return .malformed(text) }
        }
    }

    private mutating func read(_ i: Int) {
        let fd = self.slots[i].fd
        while true {
            let n: Int
            if let ssl = self.slots[i].ssl {
                let got = SSL_read(ssl, self.buffer.baseAddress, Int32(self.buffer.count))
                if got <= 0 {
                    let code = SSL_get_error(ssl, got)
                    switch code {
                    case SSL_ERROR_WANT_READ: return self.setInterest(i, LG_EPOLLIN)
                    case SSL_ERROR_WANT_WRITE: return self.setInterest(i, LG_EPOLLOUT)
                    case SSL_ERROR_ZERO_RETURN: return self.endOfStream(i)
                    case SSL_ERROR_SYSCALL where got == 0 || errno == 0: return self.endOfStream(i)
                    default: return self.readFailed(i, FetchFailure(.read, "reading the response failed: \(TLSContext.lastError())"))
                    }
                }
                n = Int(got)
            } else {
                n = recv(fd, self.buffer.baseAddress, self.buffer.count, 0)
                if n == 0 { return self.endOfStream(i) }
                if n < 0 {
                    let e = errno
                    if e == EINTR { continue }
                    if e == EAGAIN || e == EWOULDBLOCK { return }
                    return self.readFailed(i, FetchFailure(.read, "reading the response failed: \(errnoDescription(e))"))
                }
            }
            switch self.feed(i, n) {
            case .malformed(let text):
                return self.complete(i, .failure(FetchFailure(.protocol, text)), dropConnection: true)
            case .response(let response, let extraBytes):
                let pending = self.slots[i].ssl.map { SSL_pending($0) > 0 } ?? false
                return self.responded(i, response, extraBytes: extraBytes || pending)
            case .partial:
                // A short plain read took all there was: wait for more. TLS reads on, since OpenSSL may hold bytes
                // already taken from the socket.
                if self.slots[i].ssl == nil, n < self.buffer.count { return }
            }
        }
    }

    /// The server closed the connection: the end of a body that runs to the close, or a failure.
    private mutating func endOfStream(_ i: Int) {
        do throws(HTTPResponseParser.Failure) {
            let response = try self.slots[i].parser.end()
            self.responded(i, response, extraBytes: false)
        } catch {
            switch error { case .malformed(let text): self.readFailed(i, FetchFailure(.read, text)) }
        }
    }

    /// Bytes or a close on a keep-alive connection with no request in flight: a close, or bytes no request asked for
    /// (a TLS 1.3 session ticket is taken in by OpenSSL and is neither). The connection is dropped for anything else.
    private mutating func idleEvent(_ i: Int) {
        if let ssl = self.slots[i].ssl {
            let got = SSL_read(ssl, self.buffer.baseAddress, Int32(self.buffer.count))
            if got <= 0, SSL_get_error(ssl, got) == SSL_ERROR_WANT_READ { return }
        } else {
            let n = recv(self.slots[i].fd, self.buffer.baseAddress, self.buffer.count, 0)
            if n < 0, errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return }
        }
        self.dropConnection(i)
    }

    private mutating func responded(_ i: Int, _ response: HTTPResponseParser.Response, extraBytes: Bool) {
        if response.closesConnection || extraBytes || !self.keepAlive {
            self.dropConnection(i)
        }
        switch response.status {
        case 301, 302, 303, 307, 308: break
        default:
            // Not a redirect: the request is done (the target and blueprint are not even looked at).
            return self.complete(i, .success(self.checks.judge(response, redirects: self.slots[i].redirects, isHead: self.slots[i].isHead)),
                                 dropConnection: false)
        }
        let target = self.currentTarget(i)
        let blueprint = self.slots[i].hop?.blueprint ?? self.blueprints[self.slots[i].urlIndex]
        switch Redirect.next(after: response, from: target, blueprint: blueprint, redirects: self.slots[i].redirects) {
        case nil:
            self.complete(i, .success(self.checks.judge(response, redirects: self.slots[i].redirects, isHead: self.slots[i].isHead)),
                          dropConnection: false)
        case .failure(let failure)?:
            self.complete(i, .failure(failure), dropConnection: false)
        case .success(let hop)?:
            self.slots[i].hop = hop
            self.slots[i].redirects = hop.redirects
            self.slots[i].isHead = hop.blueprint.isHead
            self.slots[i].replayable = hop.blueprint.isReplayable
            self.slots[i].retried = false
            self.slots[i].request = .idle
            self.slots[i].parser = HTTPResponseParser(isHead: hop.blueprint.isHead, expectation: self.checks.body)
            self.send(i)
        }
    }
}
