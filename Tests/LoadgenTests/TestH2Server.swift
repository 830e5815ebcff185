import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization
@testable import LoadgenCore

/// An HTTP/2 server in the test process on 127.0.0.1:0: h2c with prior knowledge, or h2 over TLS with the ALPN
/// protocols given (offer only http/1.1 to see a client refuse to fall back). Paths as ``TestHTTPServer``'s:
/// `/` (hello), `/status/N`, `/delay/MS`, `/padded/N/TEXT`, `/see-other` (303 to /).
///
/// Every request is kept as received (``TestHTTPServer/Received``, version "HTTP/2"), the most streams open at once
/// on one connection is tracked against the `maxConcurrentStreams` this server's SETTINGS announce, and with
/// `goAwayAfter` the server sends GOAWAY on a connection when its Nth request arrives (the streams it has seen are
/// answered, later ones refused) and closes it 100 ms later.
final class TestH2Server: Sendable {
    let port: Int
    private let log = Mutex<[TestHTTPServer.Received]>([])
    private let connectionCounter = Atomic<Int>(0)
    private let mostOpen = Atomic<Int>(0)
    let goAwayAfter: Int?

    private init(port: Int, goAwayAfter: Int?) {
        self.port = port
        self.goAwayAfter = goAwayAfter
    }

    var received: [TestHTTPServer.Received] { self.log.withLock { $0 } }
    var connections: Int { self.connectionCounter.load(ordering: .relaxed) }
    /// The most streams that were open at once on one connection.
    var mostConcurrentStreams: Int { self.mostOpen.load(ordering: .relaxed) }

    func url(_ path: String = "/", scheme: String = "http") -> String { "\(scheme)://127.0.0.1:\(self.port)\(path)" }

    fileprivate func record(_ request: TestHTTPServer.Received) { self.log.withLock { $0.append(request) } }
    fileprivate func connected() -> Int { self.connectionCounter.add(1, ordering: .relaxed).newValue }
    fileprivate func open(_ count: Int) {
        var seen = self.mostOpen.load(ordering: .relaxed)
        while count > seen {
            let (exchanged, original) = self.mostOpen.compareExchange(expected: seen, desired: count, ordering: .relaxed)
            if exchanged { break }
            seen = original
        }
    }

    static func with<R: Sendable>(tls: NIOSSLContext? = nil, maxConcurrentStreams: Int = 100, goAwayAfter: Int? = nil,
                                  _ body: @Sendable (TestH2Server) async throws -> R) async throws -> R {
        let box = Locked<TestH2Server?>(nil)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let server = box.value!
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    let connection = ConnectionState(server: server, number: server.connected(), channel: channel)
                    var settings = NIOHTTP2Handler.ConnectionConfiguration()
                    settings.initialSettings = [HTTP2Setting(parameter: .maxConcurrentStreams, value: maxConcurrentStreams),
                                                HTTP2Setting(parameter: .maxHeaderListSize, value: 1 << 16)]
                    // Off, so that /malformed can send what a broken server sends.
                    settings.headerBlockValidation = .disabled
                    _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                        mode: .server, connectionConfiguration: settings, streamConfiguration: .init()
                    ) { stream in
                        stream.eventLoop.makeCompletedFuture {
                            try stream.pipeline.syncOperations.addHandler(H2StreamHandler(connection: connection))
                        }
                    }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let server = TestH2Server(port: channel.localAddress!.port!, goAwayAfter: goAwayAfter)
        box.withLock { $0 = server }
        do {
            let result = try await body(server)
            try? await channel.close()
            return result
        } catch {
            try? await channel.close()
            throw error
        }
    }

    /// A TLS context for the server offering these ALPN protocols, with a certificate `makeCertificates` signed.
    static func tlsContext(certificatesIn dir: String, alpn: [String]) throws -> (caFile: String, context: NIOSSLContext) {
        _ = try TestHTTPServer.makeCertificates(in: dir)
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(dir + "/server.pem").map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: dir + "/server.key", format: .pem)))
        configuration.applicationProtocols = alpn
        return (dir + "/ca.pem", try NIOSSLContext(configuration: configuration))
    }
}

/// One connection's count of requests and open streams; touched on its event loop only.
private final class ConnectionState: @unchecked Sendable {
    let server: TestH2Server
    let number: Int
    let channel: any Channel
    var requests = 0
    var open = 0
    var goneAway = false

    init(server: TestH2Server, number: Int, channel: any Channel) {
        self.server = server
        self.number = number
        self.channel = channel
    }
}

private final class H2StreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload
    private let connection: ConnectionState
    private var headers = HPACKHeaders()
    private var body: [UInt8] = []

    init(connection: ConnectionState) {
        self.connection = connection
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.connection.open += 1
        self.connection.server.open(self.connection.open)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.connection.open -= 1
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .headers(let h):
            if self.headers.isEmpty { self.headers = h.headers }
            if h.endStream { self.requestDone(context: context) }
        case .data(let d):
            if case .byteBuffer(var buffer) = d.data { self.body += buffer.readBytes(length: buffer.readableBytes) ?? [] }
            if d.endStream { self.requestDone(context: context) }
        default:
            break
        }
    }

    private func requestDone(context: ChannelHandlerContext) {
        let path = self.headers.first(name: ":path") ?? "/"
        let regular = self.headers.filter { !$0.name.hasPrefix(":") }.map { HTTPHeader(name: $0.name, value: $0.value) }
        self.connection.server.record(TestHTTPServer.Received(
            method: self.headers.first(name: ":method") ?? "", path: path, version: "HTTP/2", headers: regular, body: self.body,
            connection: self.connection.number))
        self.connection.requests += 1
        if let limit = self.connection.server.goAwayAfter, self.connection.requests == limit, !self.connection.goneAway {
            self.connection.goneAway = true
            let streamID = try? context.channel.syncOptions?.getOption(HTTP2StreamChannelOptions.streamID)
            let parent = self.connection.channel
            parent.writeAndFlush(HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: streamID ?? .maxID, errorCode: .noError,
                                                                                       opaqueData: nil)), promise: nil)
            parent.eventLoop.scheduleTask(in: .milliseconds(100)) { parent.close(promise: nil) }
        }
        let segments = path.split(separator: "/").map(String.init)
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        @Sendable func respond(_ status: Int, _ text: String, extra: [(String, String)] = []) {
            let (handler, context) = bound.value
            let isHead = handler.headers.first(name: ":method") == "HEAD"
            let head = HPACKHeaders([(":status", String(status)), ("content-length", String(text.utf8.count))] + extra)
            if isHead || text.isEmpty {
                context.writeAndFlush(handler.wrapOutboundOut(.headers(.init(headers: head, endStream: true))), promise: nil)
            } else {
                context.write(handler.wrapOutboundOut(.headers(.init(headers: head))), promise: nil)
                let buffer = context.channel.allocator.buffer(string: text)
                context.writeAndFlush(handler.wrapOutboundOut(.data(.init(data: .byteBuffer(buffer), endStream: true))), promise: nil)
            }
        }
        switch segments.first {
        case nil: respond(200, "hello")
        case "status": respond(segments.count > 1 ? Int(segments[1]) ?? 500 : 500, "status")
        case "see-other": respond(303, "", extra: [("location", "/")])
        case "padded":
            let n = segments.count > 1 ? Int(segments[1]) ?? 0 : 0
            respond(200, String(repeating: "x", count: n) + (segments.count > 2 ? segments[2] : ""))
        case "delay":
            let ms = Int64(segments.count > 1 ? Int(segments[1]) ?? 0 : 0)
            loop.scheduleTask(in: .milliseconds(ms)) { respond(200, "hello") }
        case "malformed":
            // Header blocks RFC 9113 calls malformed: an upper-case name, a connection-specific field, a pseudo-header
            // after the regular fields.
            switch segments.count > 1 ? segments[1] : "" {
            case "upper": respond(200, "hello", extra: [("X-Upper", "v")])
            case "connection": respond(200, "hello", extra: [("connection", "close")])
            default: respond(200, "hello", extra: [(":path", "/")])
            }
        default: respond(404, "not found")
        }
    }
}
