#if canImport(Glibc)
import Glibc
#endif

/// The fixed taxonomy of operation failures. Errors are counted by kind, never keyed by free-form text
/// (an unbounded set of messages would grow memory with the run); each kind keeps one sample message.
///
/// File-system kinds carry the errno name; HTTP kinds follow wrk's split (connect, read, write, timeout) plus
/// DNS, TLS, protocol and redirect failures, destinations the agent's policy refuses, and responses that fail
/// `--expect-status` or `--expect-body`.
public enum ErrorKind: String, CaseIterable, Codable, Sendable, Hashable {
    // File system, by errno name.
    case noSpace = "ENOSPC"
    case quota = "EDQUOT"
    case tooManyOpenFiles = "EMFILE"
    case tooManyOpenFilesInSystem = "ENFILE"
    case accessDenied = "EACCES"
    case notPermitted = "EPERM"
    case readOnlyFileSystem = "EROFS"
    case exists = "EEXIST"
    case noEntry = "ENOENT"
    case notDirectory = "ENOTDIR"
    case nameTooLong = "ENAMETOOLONG"
    case ioError = "EIO"
    case outOfMemory = "ENOMEM"
    case invalid = "EINVAL"
    case busy = "EBUSY"
    case stale = "ESTALE"
    case tryAgain = "EAGAIN"
    case interrupted = "EINTR"
    case otherErrno = "EOTHER"
    // HTTP.
    case dns
    case connect
    case tls
    case timeout
    case read
    case write
    case `protocol`
    case redirects
    /// A destination the agent's policy refuses (--allow-host, --allow-cidr, --deny-cidr), met mid-run: a DNS
    /// answer that changed, or a redirect. No connection was made to it.
    case policy
    /// A response whose status `--expect-status` does not accept.
    case status
    /// A response whose body lacks the `--expect-body` text.
    case body
    // Files.
    /// A file whose size or bytes, in the stat or read phase, are not what create wrote.
    case mismatch
    // Execution.
    case workerLost = "worker"

    /// The kind for an errno value.
    public static func fromErrno(_ code: Int32) -> ErrorKind {
        switch code {
        case ENOSPC: .noSpace
        case EDQUOT: .quota
        case EMFILE: .tooManyOpenFiles
        case ENFILE: .tooManyOpenFilesInSystem
        case EACCES: .accessDenied
        case EPERM: .notPermitted
        case EROFS: .readOnlyFileSystem
        case EEXIST: .exists
        case ENOENT: .noEntry
        case ENOTDIR: .notDirectory
        case ENAMETOOLONG: .nameTooLong
        case EIO: .ioError
        case ENOMEM: .outOfMemory
        case EINVAL: .invalid
        case EBUSY: .busy
        case ESTALE: .stale
        case EAGAIN: .tryAgain
        case EINTR: .interrupted
        default: .otherErrno
        }
    }

    /// Failures after which writing more files cannot succeed: a write run stops at the first one.
    public var endsWriteRun: Bool {
        switch self {
        case .noSpace, .quota, .readOnlyFileSystem: true
        default: false
        }
    }

    /// The position of this kind in ``ErrorCounts``.
    @inline(__always)
    public var index: Int { Self.indexTable[self]! }

    private static let indexTable: [ErrorKind: Int] = Dictionary(
        uniqueKeysWithValues: ErrorKind.allCases.enumerated().map { ($1, $0) })
}

/// The text of an errno value, as `strerror` gives it.
public func errnoDescription(_ code: Int32) -> String {
    String(cString: strerror(code))
}

/// Failures counted by kind: a fixed array indexed by ``ErrorKind``, so counting costs one add.
/// Encoded as an object of the nonzero counts, e.g. `{"ENOSPC": 3}`.
public struct ErrorCounts: Hashable, Sendable, Codable {
    public private(set) var counts: [UInt64]

    public init() {
        self.counts = Array(repeating: 0, count: ErrorKind.allCases.count)
    }

    public init(_ dictionary: [ErrorKind: UInt64]) {
        self.init()
        for (kind, count) in dictionary { self.counts[kind.index] = count }
    }

    @inline(__always)
    public mutating func add(_ kind: ErrorKind, _ count: UInt64 = 1) {
        self.counts[kind.index] &+= count
    }

    public subscript(kind: ErrorKind) -> UInt64 { self.counts[kind.index] }

    public var total: UInt64 { self.counts.reduce(0, &+) }

    public var isEmpty: Bool { self.counts.allSatisfy { $0 == 0 } }

    public mutating func merge(_ other: ErrorCounts) {
        for i in self.counts.indices { self.counts[i] &+= other.counts[i] }
    }

    /// The nonzero counts, most frequent first.
    public var nonzero: [(kind: ErrorKind, count: UInt64)] {
        ErrorKind.allCases.compactMap { kind in
            let count = self.counts[kind.index]
            return count > 0 ? (kind, count) : nil
        }.sorted { $0.count > $1.count || ($0.count == $1.count && $0.kind.rawValue < $1.kind.rawValue) }
    }

    public var dictionary: [String: UInt64] {
        Dictionary(uniqueKeysWithValues: self.nonzero.map { ($0.kind.rawValue, $0.count) })
    }

    /// Counts by kind name (as the JSON and binary messages carry them); nil, with the first name that is not an
    /// error kind, when one is not.
    static func named(_ raw: [String: UInt64]) -> (counts: ErrorCounts?, unknown: String?) {
        var counts = ErrorCounts()
        for (name, count) in raw {
            guard let kind = ErrorKind(rawValue: name) else { return (nil, name) }
            counts.counts[kind.index] &+= count
        }
        return (counts, nil)
    }

    public init(from decoder: any Decoder) throws {
        let named = Self.named(try [String: UInt64](from: decoder))
        guard let counts = named.counts else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "Unknown error kind '\(named.unknown ?? "")'."))
        }
        self = counts
    }

    public func encode(to encoder: any Encoder) throws {
        try self.dictionary.encode(to: encoder)
    }
}
