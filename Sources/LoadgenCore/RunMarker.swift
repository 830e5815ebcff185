/// What marks a directory as a loadgen run's: `.loadgen-run` inside it, a symbolic link whose target is this, as
/// one JSON object in the wire's key style (a link rather than a file, so a `--keep` run's directory holds exactly
/// the files the run created, as `find -type f` counts them). The run holds an exclusive `flock` on the run
/// directory for its whole life; `loadgen clean` removes only marked directories whose lock it can take, so a live
/// run (in another process, or on another host sharing the file system) is never touched.
public struct RunMarker: Codable, Sendable, Hashable {
    public static let fileName = ".loadgen-run"

    public var runID: String
    public var agentID: String
    /// The run was asked to keep its files (`--keep`): `loadgen clean` leaves it unless given `--kept`.
    public var keep: Bool
    public var createdAt: String

    public init(runID: String, agentID: String, keep: Bool,
                createdAt: String = RunReport.iso8601(wallNanos: MonotonicClock.wallNanos())) {
        self.runID = runID
        self.agentID = agentID
        self.keep = keep
        self.createdAt = createdAt
    }

    /// The name of a write run's directory under its target: `loadgen-<run>-<agent>`, the agent id made safe.
    public static func directoryName(runID: String, agentID: String) -> String {
        let safe = String(agentID.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") ? $0 : "_" })
        return "loadgen-\(runID)-\(safe.prefix(64))"
    }
}

/// What `loadgen clean` did under one target (or, on a dry run, would do).
public struct CleanReport: Sendable, Hashable, Codable {
    public struct Entry: Sendable, Hashable, Codable {
        public var path: String
        public var runID: String
        public var agentID: String
        public var keep: Bool
        public var files: UInt64
        /// Directories inside the run directory (its own not counted).
        public var directories: UInt64
        public var bytes: UInt64

        public init(path: String, runID: String, agentID: String, keep: Bool, files: UInt64 = 0, directories: UInt64 = 0,
                    bytes: UInt64 = 0) {
            self.path = path
            self.runID = runID
            self.agentID = agentID
            self.keep = keep
            self.files = files
            self.directories = directories
            self.bytes = bytes
        }
    }

    /// The target as resolved.
    public var target: String
    public var dryRun: Bool
    /// Removed (or, on a dry run, to be removed).
    public var removed: [Entry] = []
    /// Marked directories a live run holds.
    public var inUse: [String] = []
    /// Kept runs left in place (no `--kept`).
    public var kept: [String] = []
    /// Directories named like run directories without a readable marker: not loadgen's to remove.
    public var unmarked: [String] = []
    /// Directories that could not be fully removed, each with why.
    public var failures: [String] = []

    public init(target: String, dryRun: Bool) {
        self.target = target
        self.dryRun = dryRun
    }

    public var files: UInt64 { self.removed.reduce(0) { $0 + $1.files } }
    public var bytes: UInt64 { self.removed.reduce(0) { $0 + $1.bytes } }
    /// Every directory removed, the run directories themselves included.
    public var directories: UInt64 { self.removed.reduce(0) { $0 + 1 + $1.directories } }
}
