import LoadgenCore
import NIOCore
import NIOSSL

/// Mutual TLS for the link between coordinator and agents (`--tls-cert`, `--tls-key`, `--tls-ca` on both sides),
/// the option for networks the operator does not trust: the link is encrypted, and each side accepts only a peer
/// whose certificate the given CA signed. The coordinator also checks that the agent's certificate names the
/// address it dialled (a DNS name or IP address in its subjectAltName); the agent checks only the signature, since
/// coordinators have no fixed address. The shared secret's challenge-response still runs inside.
public struct ControlTLS: Sendable {
    public let context: NIOSSLContext
    public let isServer: Bool

    /// Loads a certificate chain, its key and the CA to trust, naming the file that cannot be used.
    public static func load(certificate: String, key: String, ca: String, server: Bool) throws(LoadgenError) -> ControlTLS {
        func read<T>(_ what: String, _ path: String, _ load: () throws -> T) throws(LoadgenError) -> T {
            do {
                return try load()
            } catch {
                throw .usage("The TLS \(what) '\(path)' cannot be used: \(error).")
            }
        }
        let chain = try read("certificate", certificate) { try NIOSSLCertificate.fromPEMFile(certificate) }
        guard !chain.isEmpty else { throw .usage("The TLS certificate '\(certificate)' holds no PEM certificate.") }
        let privateKey = try read("key", key) { try NIOSSLPrivateKey(file: key, format: .pem) }
        let roots = try read("CA", ca) { try NIOSSLCertificate.fromPEMFile(ca) }
        guard !roots.isEmpty else { throw .usage("The TLS CA '\(ca)' holds no PEM certificate.") }
        var configuration = server
            ? TLSConfiguration.makeServerConfiguration(certificateChain: [], privateKey: .privateKey(privateKey))
            : TLSConfiguration.makeClientConfiguration()
        configuration.certificateChain = chain.map { .certificate($0) }
        configuration.privateKey = .privateKey(privateKey)
        configuration.minimumTLSVersion = .tlsv12
        configuration.trustRoots = .certificates(roots)
        configuration.certificateVerification = server ? .noHostnameVerification : .fullVerification
        let context = try read("certificate and key", "\(certificate)' and '\(key)") {
            try NIOSSLContext(configuration: configuration)
        }
        return ControlTLS(context: context, isServer: server)
    }

    /// Adds the TLS handler in front of the pipeline; `host` is the agent's address as dialled (coordinator side).
    public func addHandler(to pipeline: ChannelPipeline.SynchronousOperations, host: String? = nil) throws {
        if self.isServer {
            try pipeline.addHandler(PlainTextSniffer())
            try pipeline.addHandler(NIOSSLServerHandler(context: self.context))
        } else {
            // An IP address is checked against the certificate's IP SANs (NIOSSL does so without a server name).
            let isAddress = host.map(TargetURL.isAddressLiteral) ?? true
            try pipeline.addHandler(NIOSSLClientHandler(context: self.context, serverHostname: isAddress ? nil : host))
        }
    }

    /// Whether an error is the TLS layer's (a handshake refused, a certificate not trusted).
    public static func isTLSError(_ error: any Error) -> Bool {
        error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError
    }

    /// A TLS failure on the coordinator's side of the link, as the reason a person can act on.
    public static func explain(_ error: any Error, dialled host: String) -> String {
        if let error = error as? NIOSSLExtraError, error == .failedToValidateHostname {
            return "its certificate does not name \(host) in its subjectAltName"
        }
        let text = "\(error)"
        if text.contains("EOF during handshake") {
            return "it closed the connection during the TLS handshake (an agent does so when it does not accept this coordinator's certificate)"
        }
        let code = ["WRONG_VERSION_NUMBER", "CERTIFICATE_VERIFY_FAILED", "TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE",
                    "TLSV1_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_CERTIFICATE_UNKNOWN"].first { text.contains($0) }
        switch code {
        case "WRONG_VERSION_NUMBER"?:
            return "it does not speak TLS (start it with --tls-cert, --tls-key and --tls-ca, or leave them off here)"
        case "CERTIFICATE_VERIFY_FAILED"?:
            return "its certificate is not trusted here (CERTIFICATE_VERIFY_FAILED): the CA given to --tls-ca did not sign it, or it has expired or is not yet valid"
        case let code?:
            return "it did not accept this coordinator's certificate (\(code)): the CA given to its --tls-ca did not sign it"
        case nil:
            return "TLS failed: \(text)"
        }
    }
}

/// On a TLS agent's connection, before the TLS handler: a TLS client's first byte is 0x16 (a handshake record);
/// anything else is a plain coordinator, which gets one plain frame saying what to give, instead of a TLS alert it
/// cannot read, and the connection closes. Once the first bytes pass, this handler steps out of the pipeline.
final class PlainTextSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    static let sentence = "This agent was started with --tls-cert: the coordinator must give --tls-cert, --tls-key and --tls-ca too (signed by the CA the agent trusts)."

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = Self.unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else {
            return
        }
        if first == 0x16 {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        // Written below the TLS handler, so it goes out as plain bytes: one frame, then the close.
        let frame = (try? FrameCodec.encode(.failure(.init(code: .authentication, message: Self.sentence)))) ?? []
        let channel = context.channel
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(bytes: frame))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}

