import COpenSSL
import Glibc
import LoadgenCore

/// Why a request failed: one kind, and a sentence for the sample.
public struct FetchFailure: Error, Sendable {
    public var kind: ErrorKind
    public var message: String

    public init(_ kind: ErrorKind, _ message: String) {
        self.kind = kind
        self.message = message
    }
}

/// A completed request: the final response (after redirects).
public struct FetchResponse: Sendable {
    public var status: Int
    public var bodyBytes: UInt64
    public var redirects: Int
    /// The `--expect-status` or `--expect-body` check the response failed: it counts as that error, not as an op
    /// (its status still counts in the status classes).
    public var rejection: FetchFailure?

    public init(status: Int, bodyBytes: UInt64, redirects: Int, rejection: FetchFailure? = nil) {
        self.status = status
        self.bodyBytes = bodyBytes
        self.redirects = redirects
        self.rejection = rejection
    }
}

/// The TLS settings every connection of a run shares: the system's trust roots (plus `--ca-file`), certificate and
/// host-name verification unless `--insecure-tls` asked otherwise.
public final class TLSContext: @unchecked Sendable {
    // SSL_CTX is safe to share between threads once configured (OpenSSL's documented rule); it is configured here,
    // in init, and only read after.
    let context: OpaquePointer
    public let verifies: Bool

    public init(caFile: String?, verify: Bool) throws(LoadgenError) {
        guard let context = SSL_CTX_new(TLS_client_method()) else {
            throw .io("A TLS context could not be made: \(Self.lastError()).")
        }
        self.context = context
        self.verifies = verify
        _ = lg_ssl_ctx_set_min_tls12(context)
        _ = lg_ssl_ctx_set_mode_partial_write(context)
        if verify {
            SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
            SSL_CTX_set_default_verify_paths(context)
            if let caFile {
                guard SSL_CTX_load_verify_locations(context, caFile, nil) == 1 else {
                    SSL_CTX_free(context)
                    throw .usage("The CA file '\(caFile)' cannot be loaded as PEM certificates: \(Self.lastError()).")
                }
            }
        } else {
            SSL_CTX_set_verify(context, SSL_VERIFY_NONE, nil)
        }
    }

    deinit {
        SSL_CTX_free(self.context)
    }

    static func lastError() -> String {
        let code = ERR_get_error()
        guard code != 0 else { return "unknown error" }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        ERR_clear_error()
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// HTTP/1.1 over blocking-style sockets, for the modes where each worker is a thread (or a process) waiting on its
/// own connection. Sockets are non-blocking underneath so every wait is a `poll` bounded by the request's deadline:
/// a server that trickles bytes cannot hold a worker past `--timeout`. One keep-alive connection per worker, reopened
/// when the server closes it; redirects are followed (at most 10).
public final class BlockingHTTPClient {
    private struct Connection {
        var fd: Int32
        var ssl: OpaquePointer?
        /// Where it is connected (scheme, host and port are what count).
        var origin: TargetURL
        var used: Bool
    }

    private let timeoutNanos: UInt64
    private let tls: OnceValue<TLSContext>
    private var connection: Connection?
    /// Resolved addresses by host and port (each sockaddr carries the port it was resolved for).
    private var resolved: [Endpoint: [(family: Int32, address: [UInt8])]] = [:]

    private struct Endpoint: Hashable {
        var host: String
        var port: Int
    }
    private let buffer: UnsafeMutableRawBufferPointer

    /// Where this client may connect (nil: anywhere); applied to every resolved address before it is used.
    private let destinations: DestinationPolicy?

    /// `--expect-status` and `--expect-body`.
    private let checks: ResponseChecks
    /// False with `--no-keepalive`: every request gets its own connection.
    private let keepAlive: Bool

    init(timeoutNanos: UInt64, tls: OnceValue<TLSContext>, destinations: DestinationPolicy? = nil,
         checks: ResponseChecks, keepAlive: Bool = true) {
        self.checks = checks
        self.keepAlive = keepAlive
        self.timeoutNanos = timeoutNanos
        self.tls = tls
        self.destinations = destinations
        self.buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    }

    deinit {
        self.disconnect()
        self.buffer.deallocate()
    }

    /// Performs one request (following redirects) that must finish by `start + timeout`.
    public func fetch(_ target: TargetURL, blueprint: RequestBlueprint, request: [UInt8], startNanos: UInt64)
        -> Result<FetchResponse, FetchFailure>
    {
        let deadline = startNanos &+ self.timeoutNanos
        var target = target
        var blueprint = blueprint
        var request = request
        var redirects = 0
        while true {
            let response: HTTPResponseParser.Response
            switch self.exchange(target, isHead: blueprint.isHead, replayable: blueprint.isReplayable, request: request,
                                 deadline: deadline) {
            case .success(let r): response = r
            case .failure(let failure): return .failure(failure)
            }
            switch Redirect.next(after: response, from: target, blueprint: blueprint, redirects: redirects) {
            case nil:
                return .success(self.checks.judge(response, redirects: redirects, isHead: blueprint.isHead))
            case .failure(let failure)?:
                return .failure(failure)
            case .success(let hop)?:
                (target, blueprint, request, redirects) = (hop.target, hop.blueprint, hop.request, hop.redirects)
            }
        }
    }

    /// One request and its response on a (possibly reused) connection. A reused connection that the server had
    /// already closed fails before any response byte: that request is sent again once on a fresh connection, when
    /// the write failed (the server never saw it) or, after a failed read, when it is safe to repeat (GET, HEAD or
    /// OPTIONS without a body: Go's rule, since a POST may have been acted on).
    private func exchange(_ target: TargetURL, isHead: Bool, replayable: Bool, request: [UInt8], deadline: UInt64)
        -> Result<HTTPResponseParser.Response, FetchFailure>
    {
        for attempt in 0..<2 {
            if let failure = self.connect(to: target, deadline: deadline) { return .failure(failure) }
            let reused = self.connection!.used
            self.connection!.used = true
            if let failure = self.write(request, deadline: deadline) {
                self.disconnect()
                if reused, attempt == 0, failure.kind != .timeout { continue }
                return .failure(failure)
            }
            var parser = HTTPResponseParser(isHead: isHead, expectation: self.checks.body)
            switch self.readResponse(&parser, deadline: deadline) {
            case .success(let response):
                if response.closesConnection || !self.keepAlive { self.disconnect() }
                return .success(response)
            case .failure(let failure):
                self.disconnect()
                if reused, replayable, attempt == 0, !parser.started, failure.kind == .read { continue }
                return .failure(failure)
            }
        }
        return .failure(FetchFailure(.read, "the connection closed before a response"))
    }

    private func readResponse(_ parser: inout HTTPResponseParser, deadline: UInt64)
        -> Result<HTTPResponseParser.Response, FetchFailure>
    {
        // The response cannot be there the instant the request went out: the first read waits for it first.
        var first = true
        while true {
            let n: Int
            defer { first = false }
            switch self.read(deadline: deadline, waitFirst: first) {
            case .success(let count): n = count
            case .failure(let failure): return .failure(failure)
            }
            if n == 0 {
                do {
                    return .success(try parser.end())
                } catch {
                    if case .malformed(let text) = error { return .failure(FetchFailure(.read, text)) }
                }
            }
            do {
                let (consumed, response) = try parser.feed(UnsafeRawBufferPointer(rebasing: self.buffer[0..<n]))
                if let response {
                    // Bytes after a complete response on a keep-alive connection would be a protocol violation
                    // (no pipelining here): do not reuse such a connection.
                    if consumed < n { self.disconnect() }
                    return .success(response)
                }
            } catch {
                if case .malformed(let text) = error { return .failure(FetchFailure(.protocol, text)) }
            }
        }
    }

    // MARK: - Connections

    private func connect(to target: TargetURL, deadline: UInt64) -> FetchFailure? {
        if let connection = self.connection {
            if connection.origin.sameOrigin(as: target) { return nil }
            self.disconnect()
        }
        let addresses: [(family: Int32, address: [UInt8])]
        let endpoint = Endpoint(host: target.host, port: target.port)
        if let cached = self.resolved[endpoint] {
            addresses = cached
        } else {
            switch Self.addresses(of: target, destinations: self.destinations) {
            case .success(let allowed):
                addresses = allowed
                self.resolved[endpoint] = allowed
            case .failure(let failure):
                return failure
            }
        }
        var lastError: Int32 = ECONNREFUSED
        for address in addresses {
            let (fd, started) = Self.startConnect(to: address)
            guard fd >= 0 else {
                lastError = started
                continue
            }
            if started != 0 {
                switch Self.wait(fd, events: Int16(POLLOUT), deadline: deadline) {
                case .timedOut:
                    close(fd)
                    return FetchFailure(.timeout, "connecting to \(target.host):\(target.port) took longer than the timeout")
                case .failed(let e):
                    lastError = e
                    close(fd)
                    continue
                case .ready:
                    var soError: Int32 = 0
                    var length = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &length)
                    if soError != 0 {
                        lastError = soError
                        close(fd)
                        continue
                    }
                }
            }
            var connection = Connection(fd: fd, ssl: nil, origin: target, used: false)
            if target.isTLS {
                let tls: TLSContext
                do throws(LoadgenError) {
                    tls = try self.tls.get()
                } catch {
                    close(fd)
                    return FetchFailure(.tls, "TLS could not be set up for \(target): \(error.message)")
                }
                switch Self.handshake(fd: fd, host: target.host, tls: tls, deadline: deadline) {
                case .success(let ssl): connection.ssl = ssl
                case .failure(let failure):
                    close(fd)
                    return failure
                }
            }
            self.connection = connection
            return nil
        }
        return FetchFailure(.connect, "connecting to \(target.host):\(target.port) failed: \(errnoDescription(lastError))")
    }

    private func disconnect() {
        guard let connection = self.connection else { return }
        if let ssl = connection.ssl {
            SSL_shutdown(ssl)
            SSL_free(ssl)
        }
        close(connection.fd)
        self.connection = nil
    }

    /// The addresses `target`'s host resolves to that the policy allows: none allowed is the policy's refusal.
    static func addresses(of target: TargetURL, destinations: DestinationPolicy?)
        -> Result<[(family: Int32, address: [UInt8])], FetchFailure>
    {
        let found: [(family: Int32, address: [UInt8])]
        switch DestinationCheck.lookup(target.host, port: target.port) {
        case .success(let entries) where entries.isEmpty:
            return .failure(FetchFailure(.dns, "\(target.host) resolves to no address"))
        case .success(let entries): found = entries
        case .failure(let failure): return .failure(failure)
        }
        guard let policy = destinations else { return .success(found) }
        let verdict = DestinationCheck.allowed(found, host: target.host, policy: policy)
        if verdict.allowed.isEmpty {
            return .failure(FetchFailure(.policy, "the agent's policy refuses \(verdict.refusal ?? target.host)"))
        }
        return .success(verdict.allowed)
    }

    /// A non-blocking TCP_NODELAY socket connecting to `address`: (fd, 0) connected, (fd, EINPROGRESS) under way,
    /// (-1, errno) failed.
    static func startConnect(to address: (family: Int32, address: [UInt8])) -> (fd: Int32, status: Int32) {
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return (-1, errno) }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let started = address.address.withUnsafeBytes { raw in
            Glibc.connect(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count))
        }
        if started == 0 { return (fd, 0) }
        let e = errno
        if e == EINPROGRESS { return (fd, EINPROGRESS) }
        close(fd)
        return (-1, e)
    }

    /// A client TLS session on `fd` for `host`: SNI for a name, and the certificate checked against the name or the
    /// address when the context verifies.
    static func session(fd: Int32, host: String, tls: TLSContext) -> Result<OpaquePointer, FetchFailure> {
        guard let ssl = SSL_new(tls.context) else {
            return .failure(FetchFailure(.tls, "a TLS session could not be made: \(TLSContext.lastError())"))
        }
        SSL_set_fd(ssl, fd)
        let isAddress = TargetURL.isAddressLiteral(host)
        if !isAddress { _ = lg_ssl_set_sni(ssl, host) }
        if tls.verifies {
            if isAddress { X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) } else { SSL_set1_host(ssl, host) }
        }
        return .success(ssl)
    }

    /// Why a handshake failed: the certificate's verification error, or OpenSSL's.
    static func handshakeFailure(_ ssl: OpaquePointer, host: String) -> FetchFailure {
        let verify = SSL_get_verify_result(ssl)
        let reason = verify != X509_V_OK ? String(cString: X509_verify_cert_error_string(verify)) : TLSContext.lastError()
        return FetchFailure(.tls, "the TLS handshake with \(host) failed: \(reason)")
    }

    private static func handshake(fd: Int32, host: String, tls: TLSContext, deadline: UInt64) -> Result<OpaquePointer, FetchFailure> {
        let ssl: OpaquePointer
        switch Self.session(fd: fd, host: host, tls: tls) {
        case .success(let made): ssl = made
        case .failure(let failure): return .failure(failure)
        }
        while true {
            let result = SSL_connect(ssl)
            if result == 1 { return .success(ssl) }
            let code = SSL_get_error(ssl, result)
            let events: Int16
            switch code {
            case SSL_ERROR_WANT_READ: events = Int16(POLLIN)
            case SSL_ERROR_WANT_WRITE: events = Int16(POLLOUT)
            default:
                let failure = Self.handshakeFailure(ssl, host: host)
                SSL_free(ssl)
                return .failure(failure)
            }
            switch Self.wait(fd, events: events, deadline: deadline) {
            case .ready: continue
            case .timedOut:
                SSL_free(ssl)
                return .failure(FetchFailure(.timeout, "the TLS handshake with \(host) took longer than the timeout"))
            case .failed(let e):
                SSL_free(ssl)
                return .failure(FetchFailure(.tls, "the TLS handshake with \(host) failed: \(errnoDescription(e))"))
            }
        }
    }

    // MARK: - Reads and writes

    private enum Wait { case ready, timedOut, failed(Int32) }

    private static func wait(_ fd: Int32, events: Int16, deadline: UInt64) -> Wait {
        while true {
            let now = MonotonicClock.nowNanos()
            guard now < deadline else { return .timedOut }
            var poller = pollfd(fd: fd, events: events, revents: 0)
            let ms = Int32(min((deadline - now + 999_999) / 1_000_000, 60_000))
            let n = poll(&poller, 1, ms)
            if n < 0 {
                if errno == EINTR { continue }
                return .failed(errno)
            }
            if n > 0 { return .ready }
        }
    }

    private func write(_ bytes: [UInt8], deadline: UInt64) -> FetchFailure? {
        guard let connection = self.connection else { return FetchFailure(.write, "no connection") }
        var offset = 0
        return bytes.withUnsafeBytes { raw -> FetchFailure? in
            while offset < raw.count {
                let pointer = raw.baseAddress! + offset
                let left = raw.count - offset
                if let ssl = connection.ssl {
                    let n = SSL_write(ssl, pointer, Int32(left))
                    if n > 0 {
                        offset += Int(n)
                        continue
                    }
                    let code = SSL_get_error(ssl, n)
                    let events: Int16 = code == SSL_ERROR_WANT_READ ? Int16(POLLIN) : Int16(POLLOUT)
                    guard code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE else {
                        return FetchFailure(.write, "writing the request failed: \(TLSContext.lastError())")
                    }
                    switch Self.wait(connection.fd, events: events, deadline: deadline) {
                    case .ready: continue
                    case .timedOut: return FetchFailure(.timeout, "sending the request took longer than the timeout")
                    case .failed(let e): return FetchFailure(.write, "writing the request failed: \(errnoDescription(e))")
                    }
                }
                let n = send(connection.fd, pointer, left, Int32(MSG_NOSIGNAL))
                if n > 0 {
                    offset += n
                    continue
                }
                let e = errno
                if e == EINTR { continue }
                guard e == EAGAIN || e == EWOULDBLOCK else {
                    return FetchFailure(.write, "writing the request failed: \(errnoDescription(e))")
                }
                switch Self.wait(connection.fd, events: Int16(POLLOUT), deadline: deadline) {
                case .ready: continue
                case .timedOut: return FetchFailure(.timeout, "sending the request took longer than the timeout")
                case .failed(let e): return FetchFailure(.write, "writing the request failed: \(errnoDescription(e))")
                }
            }
            return nil
        }
    }

    /// Reads what is there into the buffer (0 at end of stream). With `waitFirst`, a plain connection waits for data
    /// before its first recv rather than after one that finds nothing (measured: two recvs a request, one of them
    /// EAGAIN, where one is needed).
    private func read(deadline: UInt64, waitFirst: Bool = false) -> Result<Int, FetchFailure> {
        guard let connection = self.connection else { return .failure(FetchFailure(.read, "no connection")) }
        var wait = waitFirst && connection.ssl == nil
        while true {
            if let ssl = connection.ssl {
                let n = SSL_read(ssl, self.buffer.baseAddress, Int32(self.buffer.count))
                if n > 0 { return .success(Int(n)) }
                let code = SSL_get_error(ssl, n)
                switch code {
                case SSL_ERROR_ZERO_RETURN:
                    return .success(0)
                case SSL_ERROR_SYSCALL where n == 0 || errno == 0:
                    return .success(0)
                case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
                    let events: Int16 = code == SSL_ERROR_WANT_READ ? Int16(POLLIN) : Int16(POLLOUT)
                    switch Self.wait(connection.fd, events: events, deadline: deadline) {
                    case .ready: continue
                    case .timedOut: return .failure(FetchFailure(.timeout, "the response took longer than the timeout"))
                    case .failed(let e): return .failure(FetchFailure(.read, "reading the response failed: \(errnoDescription(e))"))
                    }
                default:
                    return .failure(FetchFailure(.read, "reading the response failed: \(TLSContext.lastError())"))
                }
            }
            if !wait {
                let n = recv(connection.fd, self.buffer.baseAddress, self.buffer.count, 0)
                if n >= 0 { return .success(n) }
                let e = errno
                if e == EINTR { continue }
                guard e == EAGAIN || e == EWOULDBLOCK else {
                    return .failure(FetchFailure(.read, "reading the response failed: \(errnoDescription(e))"))
                }
            }
            wait = false
            switch Self.wait(connection.fd, events: Int16(POLLIN), deadline: deadline) {
            case .ready: continue
            case .timedOut: return .failure(FetchFailure(.timeout, "the response took longer than the timeout"))
            case .failed(let e): return .failure(FetchFailure(.read, "reading the response failed: \(errnoDescription(e))"))
            }
        }
    }
}
