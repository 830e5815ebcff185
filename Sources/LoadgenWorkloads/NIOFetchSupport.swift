import Foundation
import LoadgenCore
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// What the NIO client (HTTP/2, ``AsyncHTTP2Executor``) is built from: its TLS settings, bootstrap and error kinds.
enum NIOFetch {
    /// The event loops' TLS settings (made when first needed, up front for https targets or a CA file):
    /// `--ca-file` or `--insecure-tls`, and the ALPN protocols to offer.
    static func clientTLS(engine: FetchEngine, alpn: [String]) throws(LoadgenError) -> OnceValue<NIOSSLContext> {
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
/// `--workers 4000` cost a gigabyte), handed over at each tick and when the loop's last slot finishes. Touched only on
/// that loop once the slots start, so it needs no lock.
final class LoopShared: @unchecked Sendable {
    let loop: any EventLoop
    private let sink: any TallySink
    private var counts: TickedTally
    /// Slots of this loop that have not finished.
    private var active = 0

    init(loop: any EventLoop, engine: FetchEngine, control: WorkerControl, sink: any TallySink) {
        self.loop = loop
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

