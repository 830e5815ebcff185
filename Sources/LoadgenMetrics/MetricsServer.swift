import LoadgenCore
import NIOCore
import NIOHTTP1
import NIOPosix

/// Serves an exporter's page at `GET /metrics` (HTTP/1.1, keep-alive), for Prometheus to scrape. Anything else is
/// a 404, any method but GET and HEAD a 405. The server lives exactly as long as the body of ``with(host:port:exporter:_:)``.
public enum MetricsServer {
    /// Binds `host:port` (port 0 picks one), runs `body` with the address bound, then closes the listener.
    public static func with<R: Sendable>(host: String, port: Int, exporter: MetricsExporter,
                                         _ body: (SocketAddress) async throws -> R) async throws -> R {
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMap {
                        channel.pipeline.addHandler(MetricsHandler(exporter: exporter))
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            throw LoadgenError.usage("--metrics-listen \(host):\(port) cannot be bound: \(error).")
        }
        let address = channel.localAddress!
        do {
            let result = try await body(address)
            try? await channel.close()
            return result
        } catch {
            try? await channel.close()
            throw error
        }
    }
}

/// One scrape connection: a request head, its end, one response.
private final class MetricsHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let exporter: MetricsExporter

    init(exporter: MetricsExporter) {
        self.exporter = exporter
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = self.unwrapInboundIn(data) else { return }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        var status = HTTPResponseStatus.ok
        var contentType = "text/plain; version=0.0.4; charset=utf-8"
        var body: [UInt8]
        if head.method != .GET, head.method != .HEAD {
            status = .methodNotAllowed
            contentType = "text/plain; charset=utf-8"
            body = Array("Only GET /metrics is served here.\n".utf8)
        } else if path == "/metrics" {
            body = self.exporter.page()
        } else {
            status = .notFound
            contentType = "text/plain; charset=utf-8"
            body = Array("Not found: the metrics are at /metrics.\n".utf8)
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.count))
        if head.method == .HEAD { body = [] }
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if !body.isEmpty {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let done = context.writeAndFlush(self.wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
