/// An error loadgen reports to a person: a stable code and one whole sentence that names the bad value.
public struct LoadgenError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this is; it decides the exit status and travels on the wire.
    public enum Code: String, Hashable, Sendable, Codable {
        /// Bad arguments or an invalid request, refused before anything started (exit 2).
        case usage
        /// A request beyond an agent's policy (exit 2).
        case policy
        /// A request the host cannot carry out: the kernel lacks or refuses what it needs, such as io_uring for
        /// async writes (exit 2; `--mode all` skips such a mode and says why).
        case unsupported
        /// An agent could not be reached or did not answer in time (exit 2 before a run starts).
        case unreachable
        /// A handshake failed: wrong or missing secret, version mismatch (exit 2).
        case authentication
        /// A peer broke the protocol: bad frame, unknown message, message out of order.
        case protocolViolation = "protocol"
        /// A file-system or network operation failed outside the measured operations.
        case io
        /// The run store refused or failed.
        case store
        /// A worker thread or process failed.
        case worker
        /// A run was stopped (Ctrl-C, lost coordinator).
        case aborted
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { self.message }

    /// Whether this error refuses a request before anything started (exit status 2).
    public var isRefusal: Bool {
        switch self.code {
        case .usage, .policy, .unsupported, .unreachable, .authentication: true
        default: false
        }
    }

    public static func usage(_ message: String) -> LoadgenError { LoadgenError(.usage, message) }
    public static func policy(_ message: String) -> LoadgenError { LoadgenError(.policy, message) }
    public static func unsupported(_ message: String) -> LoadgenError { LoadgenError(.unsupported, message) }
    public static func io(_ message: String) -> LoadgenError { LoadgenError(.io, message) }
    public static func protocolViolation(_ message: String) -> LoadgenError { LoadgenError(.protocolViolation, message) }
}
