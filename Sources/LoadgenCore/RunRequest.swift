/// How a run's operations are spread over concurrency on each agent.
public enum ExecutionMode: String, CaseIterable, Codable, Sendable, Hashable {
    /// One thread, one operation at a time.
    case sequential
    /// `workers` OS threads making blocking calls.
    case threads
    /// `workers` child processes of the same binary (the hidden `loadgen worker` command).
    case processes
    /// `workers` operations in flight on one thread: io_uring for writes, event loops for fetches.
    case async

    /// Parses `sequential`, `threads`, a comma list, or `all` (every mode the workload supports).
    public static func parseList(_ text: String, workload: WorkloadKind) throws(LoadgenError) -> [ExecutionMode] {
        let names = Self.names(in: text)
        guard !names.isEmpty, !names.contains("") else {
            throw .usage("The mode list '\(text)' is empty: give sequential, threads, processes, async, a comma list, or all.")
        }
        var modes: [ExecutionMode] = []
        for name in names {
            if name == "all" {
                for mode in ExecutionMode.allCases where !modes.contains(mode) { modes.append(mode) }
                continue
            }
            guard let mode = ExecutionMode(rawValue: name) else {
                throw .usage("The mode '\(name)' is not one of sequential, threads, processes, async or all.")
            }
            if !modes.contains(mode) { modes.append(mode) }
        }
        return modes
    }

    /// The modes a list names itself, leaving out those only `all` brings in.
    public static func named(in text: String) -> Set<ExecutionMode> {
        Set(Self.names(in: text).compactMap { ExecutionMode(rawValue: $0) })
    }

    private static func names(in text: String) -> [String] {
        text.split(separator: ",", omittingEmptySubsequences: false).map { String($0).trimmingWhitespace().lowercased() }
    }
}

/// The two workloads.
public enum WorkloadKind: String, Codable, Sendable, Hashable, CaseIterable {
    /// Create many small files under a directory.
    case write
    /// HTTP GET a list of URLs.
    case fetch
}

/// When written files are flushed to stable storage.
public enum FsyncPolicy: String, Codable, Sendable, Hashable, CaseIterable {
    /// Never: the page cache decides.
    case none
    /// `fsync` each file after writing it (inside the timed operation).
    case each
    /// One `syncfs` of the file system when all files are written (inside the phase's duration).
    case end
}

/// The write workload: create `files` files of `size` under a fresh run directory below `target`.
public struct WriteSpec: Hashable, Sendable, Codable {
    /// The directory under which the run directory is made.
    public var target: String
    public var files: Int
    public var size: SizeRange
    /// Files are spread over this many subdirectories of the run directory (1: none).
    public var dirs: Int
    public var fsync: FsyncPolicy
    /// Keep the files; otherwise they are removed after the run, timed as the cleanup phase.
    public var keep: Bool

    public init(target: String, files: Int = 10_000, size: SizeRange = SizeRange(exactly: 2), dirs: Int = 1,
                fsync: FsyncPolicy = .none, keep: Bool = false) {
        self.target = target
        self.files = files
        self.size = size
        self.dirs = dirs
        self.fsync = fsync
        self.keep = keep
    }

    /// The bytes the run writes if every file is created (an estimate when sizes are a range).
    public var expectedBytes: Double { Double(self.files) * self.size.meanBytes }
}

/// The fetch workload: GET (or HEAD) a list of URLs.
public struct FetchSpec: Hashable, Sendable, Codable {
    public var urls: [String]
    /// The URL list is cycled this many times (the tutorial's `list * 10`) when neither requests nor duration is set.
    public var repeatCount: Int
    /// Requests to make in all (per agent), cycling the list.
    public var requests: Int?
    /// Or: run for this long.
    public var durationNanos: UInt64?
    /// Requests per second (per agent): an open model with latency measured from each request's due time.
    public var rate: Double?
    /// With `rate` and a duration: the rate moves linearly from `rate` at the start to this at the end.
    public var rampTo: Double?
    /// Bounds connect and the whole request, however the server trickles bytes.
    public var timeoutNanos: UInt64
    public var method: HTTPMethod
    /// Trust this PEM file of CA certificates (in addition to the system's).
    public var caFile: String?
    /// Skip certificate verification (explicitly asked for).
    public var insecureTLS: Bool

    public init(urls: [String], repeatCount: Int = 1, requests: Int? = nil, durationNanos: UInt64? = nil,
                rate: Double? = nil, rampTo: Double? = nil, timeoutNanos: UInt64 = 30_000_000_000,
                method: HTTPMethod = .get, caFile: String? = nil, insecureTLS: Bool = false) {
        self.urls = urls
        self.repeatCount = repeatCount
        self.requests = requests
        self.durationNanos = durationNanos
        self.rate = rate
        self.rampTo = rampTo
        self.timeoutNanos = timeoutNanos
        self.method = method
        self.caFile = caFile
        self.insecureTLS = insecureTLS
    }

    /// The highest rate the run asks for (its ramp's end when that is higher).
    public var peakRate: Double? {
        self.rate.map { Swift.max($0, self.rampTo ?? $0) }
    }

    /// The number of requests when the run is bounded by count (nil when it runs for a duration).
    public var totalRequests: Int? {
        if self.durationNanos != nil { return self.requests }
        return self.requests ?? self.urls.count * self.repeatCount
    }
}

public enum HTTPMethod: String, Codable, Sendable, Hashable, CaseIterable {
    case get = "GET"
    case head = "HEAD"
}

/// One run as the coordinator asks every agent to perform it. Counts are per agent.
public struct RunRequest: Hashable, Sendable, Codable {
    public var runID: String
    public var label: String?
    public var workload: WorkloadKind
    public var write: WriteSpec?
    public var fetch: FetchSpec?
    public var mode: ExecutionMode
    /// Concurrency on each agent: threads, processes or operations in flight; 1 for sequential.
    public var workers: Int
    /// Seeds file names and sizes; each agent mixes in its own identity.
    public var seed: UInt64
    /// How often workers hand over their tallies and agents report.
    public var intervalNanos: UInt64

    public init(runID: String, label: String? = nil, write: WriteSpec, mode: ExecutionMode, workers: Int,
                seed: UInt64, intervalNanos: UInt64 = 1_000_000_000) {
        self.runID = runID
        self.label = label
        self.workload = .write
        self.write = write
        self.fetch = nil
        self.mode = mode
        self.workers = mode == .sequential ? 1 : workers
        self.seed = seed
        self.intervalNanos = intervalNanos
    }

    public init(runID: String, label: String? = nil, fetch: FetchSpec, mode: ExecutionMode, workers: Int,
                seed: UInt64, intervalNanos: UInt64 = 1_000_000_000) {
        self.runID = runID
        self.label = label
        self.workload = .fetch
        self.write = nil
        self.fetch = fetch
        self.mode = mode
        self.workers = mode == .sequential ? 1 : workers
        self.seed = seed
        self.intervalNanos = intervalNanos
    }

    /// The hard limits every request must respect, whatever an agent's policy allows.
    public enum Limits {
        public static let maxWorkers = 4096
        public static let maxFiles = 1_000_000_000
        public static let maxDirs = 1_000_000
        public static let maxURLs = 10_000
        public static let maxURLBytes = 8192
        public static let minIntervalNanos: UInt64 = 100_000_000
        public static let maxIntervalNanos: UInt64 = 60_000_000_000
    }

    /// Checks the request on its own terms (policy comes later, on each agent), naming the first bad field.
    public func validate() throws(LoadgenError) {
        guard !self.runID.isEmpty, self.runID.count <= 64,
              self.runID.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") })
        else {
            throw .usage("The run id '\(self.runID)' must be 1 to 64 letters, digits, '-' or '_'.")
        }
        guard self.workers >= 1 else {
            throw .usage("--workers must be at least 1; got \(self.workers).")
        }
        guard self.workers <= Limits.maxWorkers else {
            throw .usage("--workers \(self.workers) is more than loadgen's limit of \(Limits.maxWorkers).")
        }
        guard self.intervalNanos >= Limits.minIntervalNanos, self.intervalNanos <= Limits.maxIntervalNanos else {
            throw .usage("The report interval must be between 100ms and 60s; got \(DurationText.format(nanos: self.intervalNanos)).")
        }
        switch self.workload {
        case .write:
            guard let write = self.write, self.fetch == nil else {
                throw .usage("A write run must carry a write specification and no fetch specification.")
            }
            try write.validate()
        case .fetch:
            guard let fetch = self.fetch, self.write == nil else {
                throw .usage("A fetch run must carry a fetch specification and no write specification.")
            }
            try fetch.validate()
        }
    }
}

extension WriteSpec {
    public func validate() throws(LoadgenError) {
        guard !self.target.isEmpty else { throw .usage("The target directory is empty.") }
        guard self.files >= 1 else { throw .usage("--files must be at least 1; got \(self.files).") }
        guard self.files <= RunRequest.Limits.maxFiles else {
            throw .usage("--files \(self.files) is more than loadgen's limit of \(RunRequest.Limits.maxFiles).")
        }
        guard self.dirs >= 1 else { throw .usage("--dirs must be at least 1; got \(self.dirs).") }
        guard self.dirs <= RunRequest.Limits.maxDirs else {
            throw .usage("--dirs \(self.dirs) is more than loadgen's limit of \(RunRequest.Limits.maxDirs).")
        }
        guard self.size.lowerBytes <= self.size.upperBytes, self.size.upperBytes <= ByteCount.maximum else {
            throw .usage("The size \(self.size) is outside 0 to 1 TiB.")
        }
    }
}

extension FetchSpec {
    public func validate() throws(LoadgenError) {
        guard !self.urls.isEmpty else { throw .usage("The URL list is empty: give at least one http:// or https:// URL.") }
        guard self.urls.count <= RunRequest.Limits.maxURLs else {
            throw .usage("The URL list holds \(self.urls.count) URLs, more than loadgen's limit of \(RunRequest.Limits.maxURLs).")
        }
        for url in self.urls {
            _ = try TargetURL.parse(url)
        }
        guard self.repeatCount >= 1 else { throw .usage("--repeat must be at least 1; got \(self.repeatCount).") }
        if let requests = self.requests, requests < 1 {
            throw .usage("--requests must be at least 1; got \(requests).")
        }
        if let duration = self.durationNanos, duration == 0 {
            throw .usage("--duration must be longer than zero.")
        }
        if let rate = self.rate, !(rate > 0 && rate.isFinite && rate <= 10_000_000) {
            throw .usage("--rate must be a number of requests per second above 0 and at most 10000000; got \(rate).")
        }
        if let rampTo = self.rampTo {
            guard rampTo > 0, rampTo.isFinite, rampTo <= 10_000_000 else {
                throw .usage("--ramp-to must be a number of requests per second above 0 and at most 10000000; got \(rampTo).")
            }
            guard self.rate != nil, self.durationNanos != nil else {
                throw .usage("--ramp-to \(rampTo) moves the rate from --rate to it over --duration: give both.")
            }
        }
        guard self.timeoutNanos > 0 else { throw .usage("--timeout must be longer than zero.") }
        if self.insecureTLS, self.caFile != nil {
            throw .usage("--insecure-tls skips certificate checks, so --ca-file would be ignored: give one or the other.")
        }
    }
}
