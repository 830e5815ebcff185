import LoadgenCore
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL
import NIOTLS
import Foundation
import Synchronization

/// `--http2` (async mode): `workers` HTTP/2 connections, each carrying up to `--streams` requests at once: h2 by
/// ALPN over TLS (a server that does not choose h2 fails the request as `protocol`, never falls back to HTTP/1.1),
/// h2c with prior knowledge in cleartext.
///
/// The slots (`workers` x `streams`) follow the same plan as every fetch (``RequestSchedule``: interleaved indices,
/// closed loop or due times) and the same accounting. Frames are handled on the connection's own channel (NIO's
/// `NIOHTTP2Handler` without a stream multiplexer), so a request costs a HEADERS frame out, its frames in, and no
/// channel of its own. NIO's handler keeps the protocol: HPACK, stream states, the peer's SETTINGS (a stream past
/// its MAX_CONCURRENT_STREAMS waits in the handler's buffer until one closes), outbound flow control; this file
/// grants the inbound flow-control window as bodies are read.
public final class AsyncHTTP2Executor: PhaseExecutor {
    let engine: FetchEngine
    let connections: Int
    let streams: Int
    let sslContext: OnceValue<NIOSSLContext>

    public init(engine: FetchEngine, connections: Int, streams: Int) throws(LoadgenError) {
        self.engine = engine
        self.connections = connections
        self.streams = streams
        self.sslContext = try NIOFetch.clientTLS(engine: engine, alpn: ["h2"])
    }

    public func runPhase(_ phase: Phase, control: WorkerControl, mailbox: TallyMailbox) async -> [WorkerResult] {
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: AsyncFetchExecutor.loopCount(slots: self.connections,
                                                                                             cores: System.coreCount))
        let total = self.connections * self.streams
        let results = await withCheckedContinuation { (continuation: CheckedContinuation<[WorkerResult], Never>) in
            let group = SlotGroup(count: total, continuation: continuation)
            let shared = loops.makeIterator().map { loop in
                LoopShared(loop: loop, engine: self.engine, control: control, sink: mailbox)
            }
            var workers: [H2Worker] = []
            for c in 0..<self.connections {
                let loop = shared[c % shared.count]
                let worker = H2Worker(engine: self.engine, ssl: self.sslContext, shared: loop)
                for s in 0..<self.streams {
                    let index = c * self.streams + s
                    loop.addSlot()
                    worker.slots.append(H2Slot(worker: worker, share: self.engine.share(phase: phase, worker: index, of: total),
                                               control: control, done: group.done(index)))
                }
                workers.append(worker)
            }
            let all = workers
            group.watch(control) { for worker in all { worker.abort() } }
            for worker in all { worker.start(at: control.startAtNanos) }
        }
        try? await loops.shutdownGracefully()
        return results
    }
}

/// One request as HTTP/2 sends it: HPACK headers (pseudo-headers first, names lower-case) and the body.
struct H2Request {
    var headers: HPACKHeaders
    var body: ByteBuffer?

    init(_ blueprint: RequestBlueprint, target: TargetURL) {
        var authority = target.hostHeader
        var rest: [(String, String)] = []
        var given = Set<String>()
        for header in blueprint.headers {
            let name = header.name.lowercased()
            given.insert(name)
            if name == "host" {
                authority = header.value
            } else {
                rest.append((name, header.value))
            }
        }
        var fields: [(String, String)] = [(":method", blueprint.method.rawValue), (":scheme", target.scheme),
                                          (":authority", authority), (":path", target.pathAndQuery)]
        if !given.contains("user-agent") { fields.append(("user-agent", "loadgen")) }
        if !given.contains("accept") { fields.append(("accept", "*/*")) }
        fields += rest
        if let body = blueprint.body {
            fields.append(("content-length", String(body.count)))
        } else if blueprint.method == .post || blueprint.method == .put || blueprint.method == .patch {
            fields.append(("content-length", "0"))
        }
        self.headers = HPACKHeaders(fields)
        self.body = blueprint.body.flatMap { $0.isEmpty ? nil : ByteBuffer(bytes: $0) }
    }
}

/// One connection's slots and the connections they use (one per origin: the targets', and any a redirect leads to).
/// Everything here is touched only on the loop.
final class H2Worker: @unchecked Sendable {
    let engine: FetchEngine
    let ssl: OnceValue<NIOSSLContext>
    let shared: LoopShared
    var loop: any EventLoop { self.shared.loop }
    var slots: [H2Slot] = []
    /// Each target's request, made once.
    let requests: [H2Request]
    let isHead: [Bool]
    private var connections: [Endpoint: H2Connection] = [:]
    private var active = 0

    struct Endpoint: Hashable {
        var isTLS: Bool
        var host: String
        var port: Int
    }

    init(engine: FetchEngine, ssl: OnceValue<NIOSSLContext>, shared: LoopShared) {
        self.engine = engine
        self.ssl = ssl
        self.shared = shared
        self.requests = zip(engine.blueprints, engine.targets).map { H2Request($0, target: $1) }
        self.isHead = engine.blueprints.map(\.isHead)
    }

    func start(at startAt: UInt64) {
        let now = MonotonicClock.nowNanos()
        self.loop.scheduleTask(in: .nanoseconds(startAt > now ? Int64(startAt - now) : 0)) {
            self.active = self.slots.count
            for slot in self.slots { slot.next() }
        }
    }

    func abort() {
        self.loop.execute {
            for slot in self.slots { slot.abort() }
            self.closeAll()
        }
    }

    func slotFinished() {
        self.active -= 1
        if self.active == 0 { self.closeAll() }
    }

    /// Closes every connection; once every slot is done, also lets go of the slots (each holds its worker).
    private func closeAll() {
        let open = self.connections.values
        self.connections.removeAll()
        for connection in open { connection.close() }
        if self.slots.allSatisfy(\.isFinished) { self.slots.removeAll() }
    }

    /// The usable connection to `target`'s origin, connecting when there is none (or the last one is going away).
    func connection(for target: TargetURL) -> H2Connection {
        let key = Endpoint(isTLS: target.isTLS, host: target.host, port: target.port)
        if let existing = self.connections[key], existing.usable { return existing }
        let made = H2Connection(worker: self, origin: target)
        self.connections[key] = made
        made.connect()
        return made
    }

    /// A connection that can take no new streams leaves the map, so the next request opens a fresh one.
    func retire(_ connection: H2Connection) {
        let o = connection.origin
        let key = Endpoint(isTLS: o.isTLS, host: o.host, port: o.port)
        if self.connections[key] === connection { self.connections[key] = nil }
    }
}

/// One HTTP/2 connection: its channel, the streams in flight on it, and the slots waiting for it to be ready.
final class H2Connection: @unchecked Sendable {
    let worker: H2Worker
    let origin: TargetURL
    private var channel: (any Channel)?
    private enum State { case connecting, ready, draining, closed }
    private var state = State.connecting
    private var waiting: [H2Slot] = []
    private var streams: [HTTP2StreamID: H2Slot] = [:]
    private var nextStreamID: Int32 = 1
    /// Inbound bytes read since the connection's window was last granted back.
    private var unacknowledged = 0
    /// Inside a read: what is written then goes out in one flush at the read's end (``readDone()``), so the next
    /// requests after a batch of responses share a write (and over TLS a record) rather than one each.
    var reading = false
    private var needsFlush = false
    /// Granted up front and in these steps: bodies of any size flow without waiting on an update per frame.
    static let connectionWindow = 16 << 20
    static let streamWindow = 8 << 20

    init(worker: H2Worker, origin: TargetURL) {
        self.worker = worker
        self.origin = origin
    }

    var usable: Bool { self.state == .connecting || self.state == .ready }

    func connect() {
        let target = self.origin
        let engine = self.worker.engine
        var context: NIOSSLContext?
        if target.isTLS {
            do throws(LoadgenError) {
                context = try self.worker.ssl.get()
            } catch {
                return self.failed(FetchFailure(.tls, "TLS could not be set up for \(target): \(error.message)"))
            }
        }
        let ssl = context
        let host = target.host
        NIOFetch.bootstrap(on: self.worker.loop, engine: engine, connectTimeoutNanos: engine.spec.timeoutNanos)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let ssl {
                        // Over TLS, nothing of HTTP/2 (not even its preface) goes out before ALPN has chosen h2.
                        try NIOFetch.addTLS(ssl, host: host, to: channel.pipeline.syncOperations)
                        try channel.pipeline.syncOperations.addHandler(ALPNGate(connection: self))
                    } else {
                        try self.addHTTP2(to: channel.pipeline.syncOperations)
                    }
                }
            }
            .connect(host: host, port: target.port)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    // Readiness comes from the handler, when the server's SETTINGS arrive (over TLS, after ALPN chose
                    // h2; in cleartext, with prior knowledge).
                    if self.state == .closed { channel.close(promise: nil) }
                case .failure(let error):
                    self.failed(NIOFetch.classify(connectError: error, target: target))
                }
            }
    }

    /// NIO's HTTP/2 handler (it sends the connection preface as it is added to an active channel), then this file's.
    func addHTTP2(to pipeline: ChannelPipeline.SynchronousOperations) throws {
        // NIO's header block validation is off: our requests' blocks are checked when the run is made, and a
        // response's by ``H2Slot/scan(_:first:)`` in one pass over bytes (NIO's, through Substrings and
        // string comparisons, was about a tenth of a request's CPU in a profile against nginx).
        try pipeline.addHandler(NIOHTTP2Handler(
            mode: .client,
            initialSettings: [HTTP2Setting(parameter: .enablePush, value: 0),
                              HTTP2Setting(parameter: .maxConcurrentStreams, value: 100),
                              HTTP2Setting(parameter: .initialWindowSize, value: Self.streamWindow)],
            headerBlockValidation: .disabled))
        try pipeline.addHandler(H2FrameHandler(connection: self))
    }

    /// The handshake is done (and over TLS, h2 was chosen): grant the connection window, send what waited.
    func ready(_ channel: any Channel) {
        guard self.state == .connecting else { return }
        self.state = .ready
        self.channel = channel
        let grant = Self.connectionWindow - 65_535
        channel.write(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: grant)), promise: nil)
        let waiting = self.waiting
        self.waiting.removeAll()
        for slot in waiting { self.open(slot, on: channel, flush: false) }
        channel.flush()
    }

    /// Sends the slot's request on a new stream, now or when the connection is ready.
    func submit(_ slot: H2Slot) {
        switch self.state {
        case .connecting:
            self.waiting.append(slot)
        case .ready:
            self.open(slot, on: self.channel!, flush: !self.reading)
            if self.reading { self.needsFlush = true }
        case .draining, .closed:
            slot.connectionFailed(FetchFailure(.read, "the connection was closing"), sent: false)
        }
    }

    private func open(_ slot: H2Slot, on channel: any Channel, flush: Bool) {
        guard self.nextStreamID < Int32.max - 2 else {
            // Stream ids run out after about a billion requests: this connection takes no more.
            self.state = .draining
            self.worker.retire(self)
            return slot.connectionFailed(FetchFailure(.protocol, "the connection ran out of stream ids"), sent: false)
        }
        let id = HTTP2StreamID(self.nextStreamID)
        self.nextStreamID += 2
        self.streams[id] = slot
        slot.opened(stream: id, on: self)
        let request = slot.request
        let headers = HTTP2Frame(streamID: id, payload: .headers(.init(headers: request.headers, endStream: request.body == nil)))
        let promise = channel.eventLoop.makePromise(of: Void.self)
        promise.futureResult.whenFailure { error in
            // A stream refused before it went out (after a GOAWAY, say): the server never saw it.
            guard let slot = self.streams.removeValue(forKey: id) else { return }
            slot.connectionFailed(FetchFailure(.write, "sending the request failed: \(error)"), sent: false)
        }
        if let body = request.body {
            channel.write(headers, promise: nil)
            channel.write(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(body), endStream: true))), promise: promise)
        } else {
            channel.write(headers, promise: promise)
        }
        if flush { channel.flush() }
    }

    /// The slot gives up on its stream (a timeout): the server is told with RST_STREAM.
    func cancel(_ id: HTTP2StreamID) {
        guard self.streams.removeValue(forKey: id) != nil, let channel = self.channel, self.state != .closed else { return }
        channel.writeAndFlush(HTTP2Frame(streamID: id, payload: .rstStream(.cancel)), promise: nil)
    }

    /// The slot no longer waits for this connection.
    func withdraw(_ slot: H2Slot) {
        self.waiting.removeAll { $0 === slot }
    }

    func streamDone(_ id: HTTP2StreamID) {
        self.streams[id] = nil
    }

    // MARK: - Inbound (from H2FrameHandler, on the loop)

    func received(_ frame: HTTP2Frame) {
        switch frame.payload {
        case .headers(let headers):
            self.streams[frame.streamID]?.headers(headers.headers, endStream: headers.endStream)
        case .data(let data):
            let length = data.data.readableBytes
            self.unacknowledged += length
            if self.unacknowledged >= Self.connectionWindow / 2, let channel = self.channel {
                channel.write(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: self.unacknowledged)),
                              promise: nil)
                self.needsFlush = true
                self.unacknowledged = 0
            }
            guard let slot = self.streams[frame.streamID] else { return }
            if case .byteBuffer(let buffer) = data.data { slot.data(buffer) }
            if data.endStream {
                slot.ended()
            } else if slot.unacknowledged >= Self.streamWindow / 2, let channel = self.channel {
                channel.write(HTTP2Frame(streamID: frame.streamID, payload: .windowUpdate(windowSizeIncrement: slot.unacknowledged)),
                              promise: nil)
                self.needsFlush = true
                slot.unacknowledged = 0
            }
        case .rstStream(let code):
            guard let slot = self.streams.removeValue(forKey: frame.streamID) else { return }
            slot.connectionFailed(FetchFailure(.read, "the server reset the stream (\(code))"), sent: code == .refusedStream ? false : true)
        case .goAway(let lastStreamID, let code, _):
            // No new streams here; those past lastStreamID were never processed and are closed by NIO's handler
            // (``streamClosed(_:reason:)``); the others finish.
            self.state = .draining
            self.worker.retire(self)
            for (id, slot) in self.streams where id > lastStreamID {
                self.streams[id] = nil
                slot.connectionFailed(FetchFailure(.read, "the server sent GOAWAY (\(code)) before answering"), sent: false)
            }
        default:
            break
        }
    }

    /// The end of a read: one flush for everything written during it.
    func readDone() {
        self.reading = false
        if self.needsFlush {
            self.needsFlush = false
            self.channel?.flush()
        }
    }

    func streamClosed(_ id: HTTP2StreamID, reason: HTTP2ErrorCode?) {
        guard let slot = self.streams.removeValue(forKey: id) else { return }
        slot.connectionFailed(FetchFailure(.read, "the stream closed before its response ended\(reason.map { " (\($0))" } ?? "")"),
                              sent: true)
    }

    /// ALPN chose something other than h2: HTTP/2 cannot be spoken here, and loadgen never falls back.
    func refusedHTTP2(_ negotiated: String?) {
        self.failed(FetchFailure(.protocol, "\(self.origin.scheme)://\(self.origin.hostHeader) did not agree to HTTP/2 (ALPN chose \(negotiated ?? "nothing")); loadgen does not fall back to HTTP/1.1"))
    }

    /// The last error NIO reported on the connection, for the sentence of the failures its closing causes.
    private var lastError: (any Error)?

    func inactive() {
        if let error = self.lastError {
            self.failed(FetchFailure(.protocol, "the HTTP/2 connection closed after an error: \(error)"))
        } else {
            self.failed(FetchFailure(.read, "the connection closed"))
        }
    }

    /// A TLS failure ends the connection here; an HTTP/2 error is either a stream's (that stream closes, with its
    /// reason) or the connection's (NIO sends GOAWAY and closes it), so it is only remembered.
    func caught(_ error: any Error) {
        if NIOFetch.isTLSError(error) {
            self.failed(FetchFailure(.tls, "TLS failed: \(error)"))
            self.channel?.close(promise: nil)
        } else {
            self.lastError = error
        }
    }

    /// Everything waiting on or in flight on this connection fails with `failure`; the connection is done.
    func failed(_ failure: FetchFailure) {
        guard self.state != .closed else { return }
        let wasConnecting = self.state == .connecting
        self.state = .closed
        self.worker.retire(self)
        let waiting = self.waiting
        let inFlight = Array(self.streams.values)
        self.waiting.removeAll()
        self.streams.removeAll()
        for slot in waiting { slot.connectionFailed(failure, sent: false, final: wasConnecting) }
        for slot in inFlight { slot.connectionFailed(failure, sent: true) }
    }

    func close() {
        self.state = .closed
        self.channel?.close(promise: nil)
        self.channel = nil
    }
}

/// Over TLS: HTTP/2 is set up on the connection once ALPN has chosen h2, and the connection refused otherwise.
final class ALPNGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    private let connection: H2Connection

    init(connection: H2Connection) {
        self.connection = connection
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted(let negotiated) = tls {
            if negotiated == "h2" {
                do {
                    try self.connection.addHTTP2(to: context.pipeline.syncOperations)
                    context.pipeline.syncOperations.removeHandler(self, promise: nil)
                } catch {
                    self.connection.caught(error)
                    context.close(promise: nil)
                }
            } else {
                self.connection.refusedHTTP2(negotiated)
                context.close(promise: nil)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.connection.inactive()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.connection.caught(error)
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension ALPNGate: Sendable {}

/// Hands a connection its frames and events.
final class H2FrameHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    private let connection: H2Connection

    init(connection: H2Connection) {
        self.connection = connection
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = self.unwrapInboundIn(data)
        // Streams open once the server's first SETTINGS are in: until then NIO's handler would not know the server's
        // MAX_CONCURRENT_STREAMS, and a burst of streams at connect could exceed it.
        if case .settings(.settings) = frame.payload { self.connection.ready(context.channel) }
        self.connection.reading = true
        self.connection.received(frame)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.connection.readDone()
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closed = event as? StreamClosedEvent {
            self.connection.streamClosed(closed.streamID, reason: closed.reason)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.connection.inactive()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.connection.caught(error)
    }
}

@available(*, unavailable)
extension H2FrameHandler: Sendable {}

/// One request in flight at a time on a stream of its worker's connection to the target's origin.
final class H2Slot: @unchecked Sendable {
    private let worker: H2Worker
    private var engine: FetchEngine { self.worker.engine }
    private let control: WorkerControl
    private let done: @Sendable (WorkerResult) -> Void
    private var schedule: RequestSchedule
    private var finished = false
    var isFinished: Bool { self.finished }

    private struct InFlight {
        var urlIndex: Int
        var start: UInt64
        var target: TargetURL
        var hop: RequestBlueprint?
        var isHead: Bool
        var redirects: Int
        var retried: Bool
        var timeoutAt: UInt64
        var stream: HTTP2StreamID?
        var connection: H2Connection?
        var status = 0
        var location: String?
        var bodyBytes: UInt64 = 0
        var search = BodyExpectation.Progress()
    }

    private var current: InFlight?
    /// The request the slot is sending now.
    private(set) var request: H2Request
    /// Body bytes read on the current stream since its window was last granted back.
    var unacknowledged = 0
    private var timeout = SlotTimer()

    init(worker: H2Worker, share: Share, control: WorkerControl, done: @escaping @Sendable (WorkerResult) -> Void) {
        self.worker = worker
        self.control = control
        self.done = done
        self.schedule = worker.engine.schedule(share: share, control: control)
        self.request = worker.requests.first!
    }

    func abort() {
        guard !self.finished else { return }
        self.current = nil
        self.finish()
    }

    private func finish() {
        guard !self.finished else { return }
        self.finished = true
        self.timeout.cancel()
        self.worker.shared.slotFinished()
        self.worker.slotFinished()
        self.done(WorkerResult(doneAtNanos: MonotonicClock.nowNanos()))
    }

    func next() {
        guard !self.finished else { return }
        if self.control.stop.isRequested { return self.finish() }
        let now = MonotonicClock.nowNanos()
        switch self.schedule.step(now: now) {
        case .done:
            self.finish()
        case .wait(let due):
            self.worker.loop.scheduleTask(in: .nanoseconds(Int64(due - now))) { self.next() }
        case .send(let urlIndex, let start, let lag):
            if let lag { self.worker.shared.recordLag(lag) }
            let timeoutAt = start &+ self.engine.spec.timeoutNanos
            self.current = InFlight(urlIndex: urlIndex, start: start, target: self.engine.targets[urlIndex], hop: nil,
                                    isHead: self.worker.isHead[urlIndex], redirects: 0, retried: false, timeoutAt: timeoutAt)
            self.request = self.worker.requests[urlIndex]
            self.timeout.arm(at: timeoutAt, now: now, on: self.worker.loop) { self.timeoutFired() }
            self.send()
        }
    }

    private func send() {
        guard self.current != nil else { return }
        self.unacknowledged = 0
        self.current!.status = 0
        self.current!.location = nil
        self.current!.bodyBytes = 0
        self.current!.search = BodyExpectation.Progress()
        self.current!.stream = nil
        let connection = self.worker.connection(for: self.current!.target)
        self.current!.connection = connection
        connection.submit(self)
    }

    func opened(stream: HTTP2StreamID, on connection: H2Connection) {
        self.current?.stream = stream
        self.current?.connection = connection
    }

    private func timeoutFired() {
        self.timeout.fired()
        guard !self.finished, let current = self.current else { return }
        let now = MonotonicClock.nowNanos()
        if now >= current.timeoutAt {
            if let stream = current.stream { current.connection?.cancel(stream) } else { current.connection?.withdraw(self) }
            self.complete(.failure(FetchFailure(.timeout, "the request took longer than the timeout")))
        } else {
            self.timeout.arm(at: current.timeoutAt, now: now, on: self.worker.loop) { self.timeoutFired() }
        }
    }

    // MARK: - The stream's frames

    /// One pass over a response's header block: what makes it malformed (RFC 9113 8.2 and 8.3: a field name that is
    /// empty, not lower-case or not a token; a value with NUL, CR or LF; a pseudo-header other than `:status`, after a
    /// regular field, repeated, or in trailers (`first` false); a connection-specific field), else its `:status` and
    /// `location`.
    struct HeaderBlock {
        var malformation: String?
        var status: String?
        var location: String?
    }

    static func scan(_ headers: HPACKHeaders, first: Bool) -> HeaderBlock {
        var block = HeaderBlock()
        var regular = false
        for (name, value, _) in headers {
            guard let head = name.utf8.first else { return HeaderBlock(malformation: "an empty header field name") }
            if head == UInt8(ascii: ":") {
                guard first, !regular, block.status == nil, name == ":status" else {
                    return HeaderBlock(malformation: "a misplaced or unknown pseudo-header \(name)")
                }
                block.status = value
            } else {
                regular = true
                for byte in name.utf8 where !HTTPHeader.isTokenByte(byte) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z")) {
                    return HeaderBlock(malformation: "the header field name \(name) is not a lower-case token")
                }
                if HTTPHeader.isHTTP2ConnectionSpecific(name) {
                    return HeaderBlock(malformation: "the connection-specific header field \(name)")
                }
                if block.location == nil, name == "location" { block.location = value }
            }
            if value.utf8.contains(where: { $0 == 0 || $0 == 10 || $0 == 13 }) {
                return HeaderBlock(malformation: "the header field \(name) has a NUL, CR or LF in its value")
            }
        }
        return block
    }

    func headers(_ headers: HPACKHeaders, endStream: Bool) {
        guard self.current != nil else { return }
        let block = Self.scan(headers, first: self.current!.status == 0)
        if let malformed = block.malformation {
            return self.streamFailed(FetchFailure(.protocol, "a malformed response header block: \(malformed)"))
        }
        if self.current!.status == 0 {
            guard let text = block.status, let status = Int(text), (100...999).contains(status) else {
                return self.streamFailed(FetchFailure(.protocol, "a response without a valid :status"))
            }
            // An interim response (100 Continue, 103 Early Hints): the real one follows.
            if status < 200, !endStream { return }
            self.current!.status = status
            self.current!.location = block.location
        }
        if endStream { self.ended() }
    }

    func data(_ buffer: ByteBuffer) {
        guard self.current != nil else { return }
        let count = buffer.readableBytes
        self.unacknowledged += count
        self.current!.bodyBytes &+= UInt64(count)
        if let expectation = self.engine.checks.body {
            buffer.withUnsafeReadableBytes { raw in
                expectation.scan(raw.bindMemory(to: UInt8.self), &self.current!.search)
            }
        }
    }

    /// The response is complete.
    func ended() {
        guard let current = self.current else { return }
        if let stream = current.stream { current.connection?.streamDone(stream) }
        guard current.status != 0 else { return self.complete(.failure(FetchFailure(.protocol, "the stream ended without a response"))) }
        let response = HTTPResponseParser.Response(status: current.status, bodyBytes: current.bodyBytes, closesConnection: false,
                                                   location: current.location, bodyMatched: current.search.found)
        switch response.status {
        case 301, 302, 303, 307, 308: break
        default:
            // Not a redirect: done, without a copy of the request's blueprint.
            return self.complete(.success(self.engine.checks.judge(response, redirects: current.redirects, isHead: current.isHead)))
        }
        let blueprint = current.hop ?? self.engine.blueprints[current.urlIndex]
        switch Redirect.next(after: response, from: current.target, blueprint: blueprint, redirects: current.redirects) {
        case nil:
            self.complete(.success(self.engine.checks.judge(response, redirects: current.redirects, isHead: current.isHead)))
        case .failure(let failure)?:
            self.complete(.failure(failure))
        case .success(let hop)?:
            self.current!.target = hop.target
            self.current!.hop = hop.blueprint
            self.current!.isHead = hop.blueprint.isHead
            self.current!.redirects = hop.redirects
            self.current!.retried = false
            self.request = H2Request(hop.blueprint, target: hop.target)
            self.send()
        }
    }

    private func streamFailed(_ failure: FetchFailure) {
        if let current = self.current, let stream = current.stream { current.connection?.cancel(stream) }
        self.complete(.failure(failure))
    }

    /// The stream or its connection failed. A request the server never saw (`sent` false: refused, or waiting for a
    /// connection that went away) is sent once more on a fresh connection, unless the connection could not even be
    /// made (`final`).
    func connectionFailed(_ failure: FetchFailure, sent: Bool, final: Bool = false) {
        guard self.current != nil else { return }
        self.current!.stream = nil
        if !sent, !final, !self.current!.retried {
            self.current!.retried = true
            return self.send()
        }
        self.complete(.failure(failure))
    }

    private func complete(_ result: Result<FetchResponse, FetchFailure>) {
        guard let current = self.current else { return }
        self.current = nil
        let end = MonotonicClock.nowNanos()
        self.worker.shared.record(result, urlIndex: current.urlIndex, latencyNanos: end &- current.start, at: end)
        if case .success = result {
            self.next()
        } else {
            // After a failure, onward from a fresh call stack: a write that fails at once must not recurse.
            self.worker.loop.execute { self.next() }
        }
    }
}
