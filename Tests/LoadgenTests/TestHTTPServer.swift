import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
@testable import LoadgenCore

/// An HTTP/1.1 server in the test process on 127.0.0.1:0 (never the internet), with scripted paths:
///
///     /               200 "hello"                    /delay/MS         200 after MS milliseconds
///     /status/N       status N                       /redirect/N       a chain of N redirects ending at /
///     /loop           302 to itself, forever         /big/BYTES        a body of BYTES, streamed
///     /trickle        headers, then a byte every 200 ms, forever   /goto/HOST   302 to http://HOST:PORT/
///     /close          a body delimited by closing     /chunked          a chunked body of 3 chunks
///     /https/PORT     302 to https://127.0.0.1:PORT/
///     /see-other      303 to /                       /temporary   307 to /      /moved   301 to /
///     /padded/N/TEXT  200, a body of N 'x' bytes then TEXT
///
/// `pause` holds every response until it ends, like a stalled server. Requests are counted as they arrive, and
/// each is kept as received (``Received``: method, path, headers, body, connection), so tests check what the server
/// got rather than what the client meant to send.
final class TestHTTPServer: Sendable {
    let port: Int
    private let counter = Atomic<Int>(0)
    private let pausedUntil = Atomic<UInt64>(0)
    private let connectionCounter = Atomic<Int>(0)
    private let log = Mutex<[Received]>([])

    /// One request as the server parsed it.
    struct Received: Sendable, Hashable {
        var method: String
        var path: String
        var version: String
        /// In order, names as sent.
        var headers: [HTTPHeader]
        var body: [UInt8]
        /// Which connection (1, 2, ... in the order accepted) carried it.
        var connection: Int

        func header(_ name: String) -> [String] {
            self.headers.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
        }
    }

    var received: [Received] { self.log.withLock { $0 } }
    /// Connections accepted so far.
    var connections: Int { self.connectionCounter.load(ordering: .relaxed) }

    private init(port: Int) {
        self.port = port
    }

    var requests: Int { self.counter.load(ordering: .relaxed) }

    func url(_ path: String = "/", scheme: String = "http", host: String = "127.0.0.1") -> String {
        "\(scheme)://\(host):\(self.port)\(path)"
    }

    /// Holds every response (those in progress and new ones) for the next `seconds`.
    func pause(seconds: Double) {
        self.pausedUntil.store(MonotonicClock.nowNanos() &+ UInt64(seconds * 1e9), ordering: .relaxed)
    }

    fileprivate func count(_ request: Received) {
        self.log.withLock { $0.append(request) }
        self.counter.add(1, ordering: .relaxed)
    }

    fileprivate func connected() -> Int { self.connectionCounter.add(1, ordering: .relaxed).newValue }

    fileprivate var pauseRemainingNanos: UInt64 {
        let until = self.pausedUntil.load(ordering: .relaxed)
        let now = MonotonicClock.nowNanos()
        return until > now ? until - now : 0
    }

    static func with<R: Sendable>(tls: NIOSSLContext? = nil, _ body: @Sendable (TestHTTPServer) async throws -> R) async throws -> R {
        let box = Locked<TestHTTPServer?>(nil)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.addHandler(ScriptedHTTPHandler(server: box.value!))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let server = TestHTTPServer(port: channel.localAddress!.port!)
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

    /// A CA and a certificate for localhost and 127.0.0.1 signed by it, made with the openssl command line.
    static func makeCertificates(in dir: String) throws -> (caFile: String, context: NIOSSLContext) {
        let ext = dir + "/ext.cnf"
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n".write(toFile: ext, atomically: true, encoding: .utf8)
        try TestSupport.openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", dir + "/ca.key", "-out", dir + "/ca.pem",
                 "-days", "2", "-subj", "/CN=loadgen test CA"])
        try TestSupport.openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", dir + "/server.key", "-out", dir + "/server.csr",
                 "-subj", "/CN=localhost"])
        try TestSupport.openssl(["x509", "-req", "-in", dir + "/server.csr", "-CA", dir + "/ca.pem", "-CAkey", dir + "/ca.key",
                 "-CAcreateserial", "-out", dir + "/server.pem", "-days", "2", "-extfile", ext])
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(dir + "/server.pem").map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: dir + "/server.key", format: .pem)))
        configuration.minimumTLSVersion = .tlsv12
        return (dir + "/ca.pem", try NIOSSLContext(configuration: configuration))
    }
}

/// Parses requests (a body by Content-Length) and answers by path.
private final class ScriptedHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let server: TestHTTPServer
    private var pending = ByteBuffer()
    private var busy = false
    private var connection = 0

    func channelActive(context: ChannelHandlerContext) {
        self.connection = self.server.connected()
        context.fireChannelActive()
    }

    init(server: TestHTTPServer) {
        self.server = server
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = self.unwrapInboundIn(data)
        self.pending.writeBuffer(&incoming)
        self.serveNext(context: context)
    }

    private func serveNext(context: ChannelHandlerContext) {
        guard !self.busy else { return }
        let view = self.pending.readableBytesView
        guard let end = view.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
        let head = String(decoding: view[view.startIndex..<end.lowerBound], as: UTF8.self)
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let requestLine = lines.first ?? ""
        let parts = requestLine.split(separator: " ")
        let path = parts.count > 1 ? String(parts[1]) : "/"
        let isHead = parts.first == "HEAD"
        var headers: [HTTPHeader] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append(HTTPHeader(name: String(line[..<colon]),
                                      value: String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces)))
        }
        let length = headers.first { $0.name.lowercased() == "content-length" }.flatMap { Int($0.value) } ?? 0
        let headBytes = end.upperBound - view.startIndex
        guard self.pending.readableBytes >= headBytes + length else { return }  // the body is still coming
        self.pending.moveReaderIndex(forwardBy: headBytes)
        let body = self.pending.readBytes(length: length) ?? []
        self.server.count(TestHTTPServer.Received(method: String(parts.first ?? ""), path: path,
                                                  version: parts.count > 2 ? String(parts[2]) : "", headers: headers,
                                                  body: body, connection: self.connection))
        self.busy = true
        let pause = self.server.pauseRemainingNanos
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        loop.scheduleTask(in: .nanoseconds(Int64(pause))) {
            let (handler, context) = bound.value
            handler.respond(path: path, isHead: isHead, context: context)
        }
    }

    private func finished(context: ChannelHandlerContext) {
        self.busy = false
        self.serveNext(context: context)
    }

    private func write(_ text: String, context: ChannelHandlerContext, flush: Bool = true) -> EventLoopFuture<Void> {
        let buffer = context.channel.allocator.buffer(string: text)
        return flush ? context.writeAndFlush(self.wrapOutboundOut(buffer)) : context.write(self.wrapOutboundOut(buffer))
    }

    private func respond(path: String, isHead: Bool, context: ChannelHandlerContext) {
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        func simple(_ status: Int, _ body: String, extra: String = "") {
            _ = self.write("HTTP/1.1 \(status) Status\r\nContent-Length: \(body.utf8.count)\r\n\(extra)\r\n\(isHead ? "" : body)", context: context)
            self.finished(context: context)
        }
        let segments = path.split(separator: "/").map(String.init)
        switch segments.first {
        case nil:
            simple(200, "hello")
        case "delay":
            let ms = Int64(segments.count > 1 ? Int(segments[1]) ?? 0 : 0)
            loop.scheduleTask(in: .milliseconds(ms)) {
                let (handler, context) = bound.value
                _ = handler.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", context: context)
                handler.finished(context: context)
            }
        case "status":
            simple(segments.count > 1 ? Int(segments[1]) ?? 500 : 500, "status")
        case "redirect":
            let n = segments.count > 1 ? Int(segments[1]) ?? 0 : 0
            if n <= 0 { simple(200, "hello") } else { simple(302, "", extra: "Location: /redirect/\(n - 1)\r\n") }
        case "goto":
            // An absolute redirect to another host, same port.
            let host = segments.count > 1 ? String(segments[1]) : "127.0.0.1"
            simple(302, "", extra: "Location: http://\(host):\(context.channel.localAddress?.port ?? 0)/\r\n")
        case "https":
            // A redirect to https on 127.0.0.1 at the given port.
            simple(302, "", extra: "Location: https://127.0.0.1:\(segments.count > 1 ? String(segments[1]) : "443")/\r\n")
        case "loop":
            simple(302, "", extra: "Location: /loop\r\n")
        case "see-other":
            simple(303, "", extra: "Location: /\r\n")
        case "temporary":
            simple(307, "", extra: "Location: /\r\n")
        case "moved":
            simple(301, "", extra: "Location: /\r\n")
        case "padded":
            let n = segments.count > 1 ? Int(segments[1]) ?? 0 : 0
            simple(200, String(repeating: "x", count: n) + (segments.count > 2 ? segments[2] : ""))
        case "close":
            _ = self.write("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", context: context).always { _ in
                bound.value.1.close(promise: nil)
            }
        case "linger", "hangup":
            // A keep-alive response (no Connection: close), after which the server closes the connection anyway: at
            // once ("hangup", the client's next request may already be on its way) or 30 ms later ("linger", an idle
            // keep-alive timing out while the client waits for its next due time).
            let delay: Int64 = segments.first == "linger" ? 30 : 0
            _ = self.write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", context: context).always { _ in
                loop.scheduleTask(in: .milliseconds(delay)) { bound.value.1.close(promise: nil) }
            }
        case "chunked":
            _ = self.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;x=y\r\n \r\n5\r\nworld\r\n0\r\n\r\n", context: context)
            self.finished(context: context)
        case "big":
            let total = segments.count > 1 ? Int(segments[1]) ?? 0 : 0
            _ = self.write("HTTP/1.1 200 OK\r\nContent-Length: \(total)\r\n\r\n", context: context)
            self.stream(remaining: total, context: context)
        case "trickle":
            _ = self.write("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", context: context)
            self.trickle(context: context)
        default:
            simple(404, "not found")
        }
    }

    /// Streams a body in 64 KiB chunks, each written when the previous one is out (memory stays flat).
    private func stream(remaining: Int, context: ChannelHandlerContext) {
        guard remaining > 0 else { return self.finished(context: context) }
        let size = min(remaining, 65536)
        var chunk = context.channel.allocator.buffer(capacity: size)
        chunk.writeRepeatingByte(UInt8(ascii: "x"), count: size)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.writeAndFlush(self.wrapOutboundOut(chunk)).whenSuccess {
            let (handler, context) = bound.value
            handler.stream(remaining: remaining - size, context: context)
        }
    }

    private func trickle(context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: .milliseconds(200)) {
            let (handler, context) = bound.value
            guard context.channel.isActive else { return }
            _ = handler.write("x", context: context)
            handler.trickle(context: context)
        }
    }
}
