import Foundation
import LoadgenCore
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// `async` mode for fetches: `workers` requests in flight on event loops (one per core), each slot a keep-alive
/// connection driven by its own small state machine, with no thread or task per request.
///
/// The same plan as the blocking engine (``FetchEngine``): interleaved request indices, a closed loop or, with
/// `--rate`, due times with latency measured from them; the same response parser and the same accounting.
public final class AsyncFetchExecutor: PhaseExecutor {
    let engine: FetchEngine
    let slots: Int
    /// Made when first needed, as the blocking engine's (``OnceValue``).
    let sslContext: OnceValue<NIOSSLContext>

    public init(engine: FetchEngine, slots: Int) throws(LoadgenError) {
        self.engine = engine
        self.slots = slots
        self.sslContext = try Self.clientTLS(engine: engine)
    }

    /// The event loops' TLS settings (made when first needed, up front for https targets or a CA file):
    /// `--ca-file` or `--insecure-tls`, and the ALPN protocols to offer.
    static func clientTLS(engine: FetchEngine, alpn: [String] = []) throws(LoadgenError) -> OnceValue<NIOSSLContext> {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = alpn
        if engine.spec.insecureTLS {
            configuration.certificateVerification = .none
        } else if let caFile = engine.spec.caFile {
            configuration.additionalTrustRoots = [.file(caFile)]
        }
        let settings = configuration
        let context = OnceValue { () throws(LoadgenError) in
            do {
                return try NIOSSLContext(configuration: settings)
            } catch {
                throw .usage("The TLS settings cannot be used: \(error).")
            }
        }
        if engine.needsTLSUpFront { _ = try context.get() }
        return context
    }

    /// A bootstrap on `loop` for a fetch connection: the agent's destination policy as its resolver, TCP_NODELAY.
    static func bootstrap(on loop: any EventLoop, engine: FetchEngine, connectTimeoutNanos: UInt64) -> ClientBootstrap {
        var bootstrap = ClientBootstrap(group: loop)
        if let policy = engine.destinations {
            bootstrap = bootstrap.resolver(PolicyResolver(loop: loop, policy: policy))
        }
        return bootstrap
            .connectTimeout(.nanoseconds(Int64(connectTimeoutNanos)))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
    }

    /// TLS on a new connection: SNI with a host name (none for an address literal, whose certificate names the IP).
    static func addTLS(_ context: NIOSSLContext, host: String, to pipeline: ChannelPipeline.SynchronousOperations) throws {
        let isAddress = TargetURL.isAddressLiteral(host)
        try pipeline.addHandler(NIOSSLClientHandler(context: context, serverHostname: isAddress ? nil : host))
    }

    /// Event loops for `slots` connections: one per 32 connections, at most one per core. A loop keeps far more
    /// than 32 keep-alive connections busy (each request costs it a few microseconds), and every extra loop thread
    /// that sleeps and wakes in epoll costs context switches (15% of a profile at 16 connections on 2 cores, beside
    /// a local nginx) on the cores the server under test may share.
    static func loopCount(slots: Int, cores: Int) -> Int {
        max(1, min(cores, (slots + 31) / 32))
    }

    public func runPhase(_ phase: Phase, control: WorkerControl, mailbox: TallyMailbox) async -> [WorkerResult] {
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: Self.loopCount(slots: self.slots, cores: System.coreCount))
        let results = await withCheckedContinuation { (continuation: CheckedContinuation<[WorkerResult], Never>) in
            let group = SlotGroup(count: self.slots, continuation: continuation)
            // Slots are dealt round-robin to the loops, and share what their loop holds.
            let shared = loops.makeIterator().map { loop in
                LoopShared(loop: loop, engine: self.engine, control: control, sink: mailbox)
            }
            var made: [FetchSlot] = []
            for index in 0..<self.slots {
                let share = self.engine.share(phase: phase, worker: index, of: self.slots)
                let loop = shared[index % shared.count]
                loop.addSlot()
                made.append(FetchSlot(engine: self.engine, ssl: self.sslContext, shared: loop, share: share, control: control,
                                      done: group.done(index)))
            }
            let slots = made
            // A stop (abort, lost coordinator) closes every connection at once rather than waiting for responses.
            group.watch(control) { for slot in slots { slot.abort() } }
            for slot in slots { slot.start() }
        }
        try? await loops.shutdownGracefully()
        return results
    }
}

/// What the async executors' runs share: each slot's result in its place, the phase's end when the last is in, and
/// a watcher thread that aborts every slot at a stop (an abort, a lost coordinator) rather than waiting for them.
final class SlotGroup: Sendable {
    private let state: Mutex<(results: [WorkerResult?], remaining: Int)>
    private let continuation: CheckedContinuation<[WorkerResult], Never>

    init(count: Int, continuation: CheckedContinuation<[WorkerResult], Never>) {
        self.state = Mutex((Array(repeating: nil, count: count), count))
        self.continuation = continuation
    }

    /// What slot `index` calls once, when it is done.
    func done(_ index: Int) -> @Sendable (WorkerResult) -> Void {
        { result in
            let finished: [WorkerResult]? = self.state.withLock { state in
                state.results[index] = result
                state.remaining -= 1
                return state.remaining == 0 ? state.results.map { $0! } : nil
            }
            if let finished { self.continuation.resume(returning: finished) }
        }
    }

    func watch(_ control: WorkerControl, abort: @escaping @Sendable () -> Void) {
        let watcher = Thread {
            while self.state.withLock({ $0.remaining }) > 0 {
                if control.stop.isRequested { return abort() }
                usleep(20_000)
            }
        }
        watcher.start()
    }
}

/// A slot's one request timer, rather than one scheduled and cancelled per request: it fires at the earliest deadline
/// it was armed for and is re-armed then for the current request's, so a request still times out on time.
struct SlotTimer {
    private var timer: Scheduled<Void>?
    private var at: UInt64 = 0

    /// Makes sure `fire` runs by `when`.
    mutating func arm(at when: UInt64, now: UInt64, on loop: any EventLoop, _ fire: @escaping @Sendable () -> Void) {
        if self.timer != nil, self.at <= when { return }
        self.timer?.cancel()
        self.at = when
        self.timer = loop.scheduleTask(in: .nanoseconds(when > now ? Int64(when - now) : 0), fire)
    }

    /// The timer fired: it is no longer armed.
    mutating func fired() { self.timer = nil }

    mutating func cancel() {
        self.timer?.cancel()
        self.timer = nil
    }
}

/// What the slots of one event loop share: one tally (a latency histogram is 270 KB, so one per slot would make
/// `--workers 4000` cost a gigabyte), handed over at each tick and when the loop's last slot finishes, and one copy
/// of each target's request bytes (written as is: no copy per request, and no reference count bounced between
/// cores). Touched only on that loop once the slots start, so it needs no lock.
final class LoopShared: @unchecked Sendable {
    let loop: any EventLoop
    let requests: [ByteBuffer]
    /// Each target's: whether its requests are HEADs, and whether they are safe to send again.
    let isHead: [Bool]
    let replayable: [Bool]
    private let sink: any TallySink
    private var counts: TickedTally
    /// Slots of this loop that have not finished.
    private var active = 0

    init(loop: any EventLoop, engine: FetchEngine, control: WorkerControl, sink: any TallySink) {
        self.loop = loop
        self.requests = engine.requests.map { ByteBuffer(bytes: $0) }
        self.isHead = engine.blueprints.map(\.isHead)
        self.replayable = engine.blueprints.map(\.isReplayable)
        self.sink = sink
        self.counts = TickedTally(control: control, targetCount: engine.targets.count)
    }

    /// Counts one more slot on this loop (before the slots start).
    func addSlot() {
        self.active += 1
    }

    func record(_ result: Result<FetchResponse, FetchFailure>, urlIndex: Int, latencyNanos: UInt64, at end: UInt64) {
        self.counts.record(result, urlIndex: urlIndex, latencyNanos: latencyNanos)
        self.counts.tick(end, to: self.sink)
    }

    /// How late a request of the open model started.
    func recordLag(_ lag: ScheduleLag) {
        self.counts.recordLag(lag)
    }

    /// One of the loop's slots is done; the last one hands over what is left.
    func slotFinished() {
        self.active -= 1
        if self.active == 0 { self.counts.handOver(to: self.sink) }
    }
}

/// One request in flight at a time, forever on one event loop: all its state is touched only there.
final class FetchSlot: @unchecked Sendable {
    // Every property below is read and written only on `loop` (start/abort hop onto it): the loop is the lock.
    private let engine: FetchEngine
    private let ssl: OnceValue<NIOSSLContext>
    private let shared: LoopShared
    private var loop: any EventLoop { self.shared.loop }
    private let control: WorkerControl
    private let done: @Sendable (WorkerResult) -> Void

    private var schedule: RequestSchedule
    private var finished = false

    private var channel: (any Channel)?
    /// Where `channel` is connected (its scheme, host and port are what count).
    private var origin: TargetURL?
    /// Whether the current connection has already carried a request (a failure before any byte is then a stale
    /// keep-alive, retried once).
    private var reused = false

    private struct InFlight {
        var urlIndex: Int
        var start: UInt64
        var target: TargetURL
        /// The request after a redirect changed it (nil: the target's own, ``FetchEngine/blueprints``).
        var hop: RequestBlueprint?
        var isHead: Bool
        var replayable: Bool
        var request: ByteBuffer
        var redirects: Int
        var retried: Bool
        var parser: HTTPResponseParser
        /// When the request (redirects included) times out.
        var timeoutAt: UInt64
        var generation: Int
    }

    private var current: InFlight?
    private var generation = 0
    private var timeout = SlotTimer()

    init(engine: FetchEngine, ssl: OnceValue<NIOSSLContext>, shared: LoopShared, share: Share, control: WorkerControl,
         done: @escaping @Sendable (WorkerResult) -> Void) {
        self.engine = engine
        self.ssl = ssl
        self.shared = shared
        self.schedule = engine.schedule(share: share, control: control)
        self.control = control
        self.done = done
    }

    func start() {
        let startAt = self.control.startAtNanos
        let now = MonotonicClock.nowNanos()
        let delay = startAt > now ? Int64(startAt - now) : 0
        self.loop.scheduleTask(in: .nanoseconds(delay)) { self.next() }
    }

    /// Forgets the connection, then closes it. In that order: a close on the loop runs `channelInactive` at once,
    /// which must already see that this connection is no longer the slot's.
    private func dropChannel() {
        let channel = self.channel
        self.channel = nil
        channel?.close(promise: nil)
    }

    func abort() {
        self.loop.execute {
            guard !self.finished else { return }
            self.current = nil
            self.dropChannel()
            self.finish()
        }
    }

    private func finish() {
        guard !self.finished else { return }
        self.finished = true
        self.timeout.cancel()
        self.dropChannel()
        self.shared.slotFinished()
        self.done(WorkerResult(doneAtNanos: MonotonicClock.nowNanos()))
    }

    /// Starts the next request of the share, when it is due.
    private func next() {
        guard !self.finished else { return }
        if self.control.stop.isRequested { return self.finish() }
        let now = MonotonicClock.nowNanos()
        switch self.schedule.step(now: now) {
        case .done:
            self.finish()
        case .wait(let due):
            self.loop.scheduleTask(in: .nanoseconds(Int64(due - now))) { self.next() }
        case .send(let urlIndex, let start, let lag):
            if let lag { self.shared.recordLag(lag) }
            let timeoutAt = start &+ self.engine.spec.timeoutNanos
            self.generation &+= 1
            self.current = InFlight(
                urlIndex: urlIndex, start: start, target: self.engine.targets[urlIndex], hop: nil,
                isHead: self.shared.isHead[urlIndex], replayable: self.shared.replayable[urlIndex],
                request: self.shared.requests[urlIndex], redirects: 0, retried: false,
                parser: HTTPResponseParser(isHead: self.shared.isHead[urlIndex], expectation: self.engine.checks.body),
                timeoutAt: timeoutAt, generation: self.generation)
            self.timeout.arm(at: timeoutAt, now: now, on: self.loop) { self.timeoutFired() }
            self.send()
        }
    }

    private func timeoutFired() {
        self.timeout.fired()
        guard !self.finished, let current = self.current else { return }
        let now = MonotonicClock.nowNanos()
        if now >= current.timeoutAt {
            self.complete(.failure(FetchFailure(.timeout, "the request took longer than the timeout")), dropConnection: true)
        } else {
            self.timeout.arm(at: current.timeoutAt, now: now, on: self.loop) { self.timeoutFired() }
        }
    }

    /// Sends the current request on a connection to its origin, connecting first when needed.
    private func send() {
        guard let current = self.current else { return }
        let target = current.target
        if let channel = self.channel, let origin = self.origin, origin.sameOrigin(as: target), channel.isActive {
            self.write(current.request, on: channel)
            return
        }
        self.dropChannel()
        self.origin = target
        self.reused = false
        let generation = current.generation
        let host = target.host
        let isTLS = target.isTLS
        var context: NIOSSLContext?
        if isTLS {
            do throws(LoadgenError) {
                context = try self.ssl.get()
            } catch {
                return self.complete(.failure(FetchFailure(.tls, "TLS could not be set up for \(target): \(error.message)")),
                                     dropConnection: true)
            }
        }
        let ssl = context
        let remaining = (current.start &+ self.engine.spec.timeoutNanos) &- MonotonicClock.nowNanos()
        AsyncFetchExecutor.bootstrap(on: self.loop, engine: self.engine, connectTimeoutNanos: min(remaining, self.engine.spec.timeoutNanos))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let ssl { try AsyncFetchExecutor.addTLS(ssl, host: host, to: channel.pipeline.syncOperations) }
                    try channel.pipeline.syncOperations.addHandler(FetchResponseHandler(slot: self))
                }
            }
            .connect(host: host, port: target.port)
            .whenComplete { result in
                // On `self.loop`: the bootstrap's group is that loop.
                guard self.current?.generation == generation else {
                    if case .success(let channel) = result { channel.close(promise: nil) }
                    return
                }
                switch result {
                case .success(let channel):
                    self.channel = channel
                    self.write(self.current!.request, on: channel)
                case .failure(let error):
                    self.complete(.failure(Self.classify(connectError: error, target: target)), dropConnection: true)
                }
            }
    }

    private func write(_ request: ByteBuffer, on channel: any Channel) {
        let generation = self.current?.generation
        channel.writeAndFlush(request).whenFailure { error in
            guard self.current?.generation == generation else { return }
            self.connectionFailed(FetchFailure(.write, "writing the request failed: \(error)"))
        }
    }

    // MARK: - Events from the connection (on the loop)

    /// What a read gave the parser.
    private enum Fed {
        case partial
        case response(HTTPResponseParser.Response, extraBytes: Bool)
        case malformed(String)
    }

    func received(_ buffer: ByteBuffer, from channel: any Channel) {
        guard channel === self.channel, self.current != nil else { return }
        // The parser is fed where it lies: no copy of the request's state in and out, a retain and a release of each
        // of its references per read.
        let fed: Fed = buffer.withUnsafeReadableBytes { bytes in
            do throws(HTTPResponseParser.Failure) {
                let (consumed, response) = try self.current!.parser.feed(bytes)
                guard let response else { return .partial }
                return .response(response, extraBytes: consumed < bytes.count)
            } catch {
                switch error { case .malformed(let text): return .malformed(text) }
            }
        }
        switch fed {
        case .partial:
            return
        case .malformed(let text):
            self.complete(.failure(FetchFailure(.protocol, text)), dropConnection: true)
        case .response(let response, let extraBytes):
            self.responded(response, extraBytes: extraBytes)
        }
    }

    func closed(_ channel: any Channel) {
        guard channel === self.channel else { return }
        self.channel = nil
        guard var current = self.current else { return }
        do {
            let response = try current.parser.end()
            self.current = current
            self.responded(response, extraBytes: false)
        } catch {
            self.connectionFailed(FetchFailure(.read, current.parser.started
                ? "the server closed the connection in the middle of a response"
                : "the connection closed before a response"))
        }
    }

    func failed(_ error: any Error, on channel: any Channel) {
        guard channel === self.channel else { return }
        if Self.isTLSError(error) {
            self.complete(.failure(FetchFailure(.tls, "TLS failed: \(error)")), dropConnection: true)
        } else {
            self.connectionFailed(FetchFailure(.read, "reading the response failed: \(error)"))
        }
        channel.close(promise: nil)
    }

    /// The connection broke during a request: a stale keep-alive (nothing of the response came yet) is retried once
    /// on a fresh connection; anything else is the request's failure.
    private func connectionFailed(_ failure: FetchFailure) {
        guard var current = self.current else { return }
        self.dropChannel()
        // As the blocking client: a failed write is always sent again, a failed read only when the request is safe
        // to repeat.
        if self.reused, !current.retried, !current.parser.started, current.replayable || failure.kind == .write {
            current.retried = true
            current.parser = HTTPResponseParser(isHead: current.isHead, expectation: self.engine.checks.body)
            self.current = current
            self.send()
            return
        }
        self.complete(.failure(failure), dropConnection: true)
    }

    private func responded(_ response: HTTPResponseParser.Response, extraBytes: Bool) {
        guard self.current != nil else { return }
        self.reused = true
        if response.closesConnection || extraBytes || !self.engine.spec.keepAlive {
            self.dropChannel()
        }
        // The request's state is changed where it lies; only a redirect reads it whole.
        let blueprint = self.current!.hop ?? self.engine.blueprints[self.current!.urlIndex]
        switch Redirect.next(after: response, from: self.current!.target, blueprint: blueprint,
                             redirects: self.current!.redirects) {
        case nil:
            break
        case .failure(let failure)?:
            return self.complete(.failure(failure), dropConnection: false)
        case .success(let hop)?:
            self.current!.target = hop.target
            self.current!.hop = hop.blueprint
            self.current!.isHead = hop.blueprint.isHead
            self.current!.replayable = hop.blueprint.isReplayable
            self.current!.request = ByteBuffer(bytes: hop.request)
            self.current!.redirects = hop.redirects
            self.current!.parser = HTTPResponseParser(isHead: hop.blueprint.isHead, expectation: self.engine.checks.body)
            self.current!.retried = false
            self.send()
            return
        }
        self.complete(.success(self.engine.checks.judge(response, redirects: self.current!.redirects,
                                                        isHead: self.current!.isHead)), dropConnection: false)
    }

    /// Counts the current request and moves on to the next.
    private func complete(_ result: Result<FetchResponse, FetchFailure>, dropConnection: Bool) {
        guard let current = self.current else { return }
        self.current = nil
        if dropConnection {
            self.dropChannel()
        }
        let end = MonotonicClock.nowNanos()
        self.shared.record(result, urlIndex: current.urlIndex, latencyNanos: end &- current.start, at: end)
        self.next()
    }

    // MARK: - Error kinds

    static func classify(connectError error: any Error, target: TargetURL) -> FetchFailure {
        let place = "\(target.host):\(target.port)"
        if let error = error as? NIOConnectionError {
            if let refused = (error.dnsAError as? PolicyResolver.Refused) ?? (error.dnsAAAAError as? PolicyResolver.Refused),
               error.connectionErrors.isEmpty {
                return FetchFailure(.policy, "the agent's policy refuses \(refused.description)")
            }
            if error.connectionErrors.isEmpty, error.dnsAError != nil || error.dnsAAAAError != nil {
                return FetchFailure(.dns, "resolving \(target.host) failed")
            }
            let reason = error.connectionErrors.first.map { "\($0.error)" } ?? "unreachable"
            return FetchFailure(.connect, "connecting to \(place) failed: \(reason)")
        }
        if let error = error as? ChannelError, case .connectTimeout = error {
            return FetchFailure(.timeout, "connecting to \(place) took longer than the timeout")
        }
        if isTLSError(error) { return FetchFailure(.tls, "the TLS handshake with \(target.host) failed: \(error)") }
        return FetchFailure(.connect, "connecting to \(place) failed: \(error)")
    }

    static func isTLSError(_ error: any Error) -> Bool {
        error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError
    }
}

/// Hands a slot what its connection does; lives on the slot's loop.
final class FetchResponseHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let slot: FetchSlot

    init(slot: FetchSlot) {
        self.slot = slot
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.slot.received(self.unwrapInboundIn(data), from: context.channel)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.slot.closed(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.slot.failed(error, on: context.channel)
    }
}

@available(*, unavailable)
extension FetchResponseHandler: Sendable {}
