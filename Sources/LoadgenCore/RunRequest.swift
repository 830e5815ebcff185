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

    /// The TLS library of the mode's client: HTTP/1.1 in every mode uses the system's OpenSSL (the blocking clients a
    /// session per thread, async non-blocking sessions on its epoll loops); HTTP/2 (async only) uses BoringSSL, which
    /// swift-nio-ssl builds in.
    public func tlsLibrary(http2: Bool) -> String {
        http2 ? "BoringSSL (swift-nio-ssl)" : "OpenSSL (system)"
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
    /// Keep the files; otherwise they are removed after the run, timed as the cleanup (remove) phase.
    public var keep: Bool
    /// `--phases ...stat`: a timed phase that stats each created file, checking its size.
    public var stat: Bool
    /// `--phases ...read`: a timed phase that reads each created file back, checking its byte count.
    public var read: Bool
    /// `--verify`: the read phase also compares every byte with what create wrote.
    public var verify: Bool
    /// `--stonewall`: every worker stops creating at this time into the create phase (IO500's rule); the later
    /// phases act on exactly the files each worker made.
    public var stonewallNanos: UInt64?
    /// `--dir-per-worker` (mdtest's `-u`): each worker's files in a directory of its own.
    public var dirPerWorker: Bool
    /// `--preset`: the shape the run's parameters came from (mdtest-easy, mdtest-hard), for the report.
    public var preset: String?
    /// `--tree DEPTH:FANOUT`: the files spread over the leaves of a directory tree, made in the timed mkdir phase.
    public var tree: TreeShape?
    /// `--shared-target`: every agent's files in one run directory, `loadgen-<run>-shared-<token>`, the token drawn
    /// by the coordinator (16 hex digits) so that no one can make the directory ahead of the run. Names carry the
    /// agent's place (``agentIndex``), so they never collide.
    public var sharedToken: String?
    /// `--shift` (mdtest's `-N`): each agent stats and reads its neighbour's files, not its own (shared targets only).
    public var shift: Bool
    /// Per agent, set by the coordinator in the prepare it sends: the agent's place among the run's agents, and its
    /// neighbour's (the next agent, the last one's being the first's) with `--shift`.
    public var agentIndex: Int?
    public var neighbourIndex: Int?
    public var neighbourAgentID: String?
    /// `--rate`: files per second each agent creates, an open model (fio's rate_iops): file `k` of a worker's share
    /// falls due at `k / (rate / workers)` after the start, and its latency counts from then.
    public var rate: Double?

    public init(target: String, files: Int = 10_000, size: SizeRange = SizeRange(exactly: 2), dirs: Int = 1,
                fsync: FsyncPolicy = .none, keep: Bool = false, stat: Bool = false, read: Bool = false, verify: Bool = false,
                stonewallNanos: UInt64? = nil, dirPerWorker: Bool = false, preset: String? = nil,
                tree: TreeShape? = nil, sharedToken: String? = nil, shift: Bool = false) {
        self.target = target
        self.files = files
        self.size = size
        self.dirs = dirs
        self.fsync = fsync
        self.keep = keep
        self.stat = stat
        self.read = read
        self.verify = verify
        self.stonewallNanos = stonewallNanos
        self.dirPerWorker = dirPerWorker
        self.preset = preset
        self.tree = tree
        self.sharedToken = sharedToken
        self.shift = shift
    }

    /// The name of an agent's run directory under the target: its own, or the run's one shared directory.
    public func runDirectoryName(runID: String, agentID: String) -> String {
        guard let token = self.sharedToken else { return RunMarker.directoryName(runID: runID, agentID: agentID) }
        return "loadgen-\(runID)-shared-\(token)"
    }

    /// Agents a shared target tells apart: a file's name begins with its agent's place in three base64 digits.
    public static let maxSharedAgents = 64 * 64 * 64

    /// A fresh token for `--shared-target`.
    public static func makeSharedToken() -> String {
        var generator = SystemRandomNumberGenerator()
        let value = generator.next() as UInt64
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// The subdirectories made with each agent's run directory: one per worker with `--dir-per-worker`, else
    /// `--dirs`; none with `--tree`, whose directories the mkdir phase makes.
    public func directoryCount(workers: Int) -> Int {
        if self.tree != nil { return 0 }
        return self.dirPerWorker ? max(1, workers) : self.dirs
    }

    /// `--dir-per-worker` in a shared target: this agent's workers' directories are numbered from here (agent
    /// `i`'s from `i * workers`), so no two agents' workers share one; nil elsewhere (numbered from 0, and no
    /// subdirectory at all for a single one).
    public func firstSubdirectory(workers: Int) -> Int? {
        guard self.dirPerWorker, self.sharedToken != nil else { return nil }
        return (self.agentIndex ?? 0) * max(1, workers)
    }

    enum CodingKeys: String, CodingKey {
        case target, files, size, dirs, fsync, keep, stat, read, verify, stonewallNanos, dirPerWorker, preset, tree
        case sharedToken, shift, agentIndex, neighbourIndex, neighbourAgentID, rate
    }

    /// Runs stored before the stat and read phases existed decode with neither.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.target = try c.decode(String.self, forKey: .target)
        self.files = try c.decode(Int.self, forKey: .files)
        self.size = try c.decode(SizeRange.self, forKey: .size)
        self.dirs = try c.decode(Int.self, forKey: .dirs)
        self.fsync = try c.decode(FsyncPolicy.self, forKey: .fsync)
        self.keep = try c.decode(Bool.self, forKey: .keep)
        self.stat = try c.decodeIfPresent(Bool.self, forKey: .stat) ?? false
        self.read = try c.decodeIfPresent(Bool.self, forKey: .read) ?? false
        self.verify = try c.decodeIfPresent(Bool.self, forKey: .verify) ?? false
        self.stonewallNanos = try c.decodeIfPresent(UInt64.self, forKey: .stonewallNanos)
        self.dirPerWorker = try c.decodeIfPresent(Bool.self, forKey: .dirPerWorker) ?? false
        self.preset = try c.decodeIfPresent(String.self, forKey: .preset)
        self.tree = try c.decodeIfPresent(TreeShape.self, forKey: .tree)
        self.sharedToken = try c.decodeIfPresent(String.self, forKey: .sharedToken)
        self.shift = try c.decodeIfPresent(Bool.self, forKey: .shift) ?? false
        self.agentIndex = try c.decodeIfPresent(Int.self, forKey: .agentIndex)
        self.neighbourIndex = try c.decodeIfPresent(Int.self, forKey: .neighbourIndex)
        self.neighbourAgentID = try c.decodeIfPresent(String.self, forKey: .neighbourAgentID)
        self.rate = try c.decodeIfPresent(Double.self, forKey: .rate)
    }

    /// The phases the run has, in order: mkdir with `--tree`, create (`main`), then stat and read when asked, then
    /// remove (`cleanup`) unless the files are kept.
    public var phases: [Phase] {
        var phases: [Phase] = self.tree == nil ? [.main] : [.mkdir, .main]
        if self.stat { phases.append(.stat) }
        if self.read { phases.append(.read) }
        if !self.keep { phases.append(.cleanup) }
        return phases
    }

    /// The names `--phases` and reports use: mkdir, create, stat, read, remove.
    public static func name(of phase: Phase) -> String {
        switch phase {
        case .mkdir: "mkdir"
        case .main: "create"
        case .stat: "stat"
        case .read: "read"
        case .cleanup: "remove"
        }
    }

    /// Parses `--phases`: create, stat, read and remove, comma-separated, in that order; create is required.
    public static func parsePhases(_ text: String) throws(LoadgenError) -> (stat: Bool, read: Bool, remove: Bool) {
        let names = text.split(separator: ",", omittingEmptySubsequences: false).map { String($0).trimmingWhitespace().lowercased() }
        let order = ["create", "stat", "read", "remove"]
        var last = -1
        for name in names {
            guard let position = order.firstIndex(of: name) else {
                throw .usage("The phase '\(name)' in --phases '\(text)' is not one of create, stat, read and remove.")
            }
            guard position > last else {
                throw .usage("--phases '\(text)' lists '\(name)' out of order or twice: the phases run as create, stat, read, remove.")
            }
            last = position
        }
        guard names.first == "create" else {
            throw .usage("--phases '\(text)' has no create phase: a run makes its files in a fresh directory of its own, so stat, read and remove need create first.")
        }
        return (names.contains("stat"), names.contains("read"), names.contains("remove"))
    }

    /// The bytes the run writes if every file is created (an estimate when sizes are a range).
    public var expectedBytes: Double { Double(self.files) * self.size.meanBytes }
}

/// The fetch workload: requests to a list of URLs, each GET by default or with its own method, headers and body.
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
    /// The method of every request a targets file does not give one.
    public var method: HTTPMethod
    /// Trust this PEM file of CA certificates (in addition to the system's).
    public var caFile: String?
    /// Skip certificate verification (explicitly asked for).
    public var insecureTLS: Bool
    /// `--header`s, sent with every request.
    public var headers: [HTTPHeader]
    /// The bodies requests send (each once, however many targets use it).
    public var bodies: [RequestBody]
    /// `--body-file`: the index in `bodies` of the body of every request a targets file does not give one.
    public var body: Int?
    /// From a targets file in vegeta's format: what each URL's requests add, one entry per URL (nil: none do).
    public var requestTargets: [RequestTarget]?
    /// `--expect-status`: any other final status is an error of kind `status`.
    public var expectStatus: String?
    /// `--expect-body`: a final response whose first 64 KiB lack this text is an error of kind `body`.
    public var expectBody: String?
    /// False with `--no-keepalive`: a new connection for every request, its connect time inside the latency.
    public var keepAlive: Bool
    /// `--http2`: HTTP/2 (h2 by ALPN over TLS, h2c with prior knowledge in cleartext), async mode only.
    public var http2: Bool
    /// `--streams`: requests in flight on each HTTP/2 connection (`workers` counts connections).
    public var streams: Int

    public init(urls: [String], repeatCount: Int = 1, requests: Int? = nil, durationNanos: UInt64? = nil,
                rate: Double? = nil, rampTo: Double? = nil, timeoutNanos: UInt64 = 30_000_000_000,
                method: HTTPMethod = .get, caFile: String? = nil, insecureTLS: Bool = false,
                headers: [HTTPHeader] = [], bodies: [RequestBody] = [], body: Int? = nil,
                requestTargets: [RequestTarget]? = nil, expectStatus: String? = nil, expectBody: String? = nil,
                keepAlive: Bool = true, http2: Bool = false, streams: Int = 1) {
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
        self.headers = headers
        self.bodies = bodies
        self.body = body
        self.requestTargets = requestTargets
        self.expectStatus = expectStatus
        self.expectBody = expectBody
        self.keepAlive = keepAlive
        self.http2 = http2
        self.streams = streams
    }

    enum CodingKeys: String, CodingKey {
        case urls, repeatCount, requests, durationNanos, rate, rampTo, timeoutNanos, method, caFile, insecureTLS
        case headers, bodies, body, requestTargets, expectStatus, expectBody, keepAlive, http2, streams
    }

    /// Runs stored before headers, bodies and checks existed decode with none of them.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.urls = try c.decode([String].self, forKey: .urls)
        self.repeatCount = try c.decode(Int.self, forKey: .repeatCount)
        self.requests = try c.decodeIfPresent(Int.self, forKey: .requests)
        self.durationNanos = try c.decodeIfPresent(UInt64.self, forKey: .durationNanos)
        self.rate = try c.decodeIfPresent(Double.self, forKey: .rate)
        self.rampTo = try c.decodeIfPresent(Double.self, forKey: .rampTo)
        self.timeoutNanos = try c.decode(UInt64.self, forKey: .timeoutNanos)
        self.method = try c.decode(HTTPMethod.self, forKey: .method)
        self.caFile = try c.decodeIfPresent(String.self, forKey: .caFile)
        self.insecureTLS = try c.decode(Bool.self, forKey: .insecureTLS)
        self.headers = try c.decodeIfPresent([HTTPHeader].self, forKey: .headers) ?? []
        self.bodies = try c.decodeIfPresent([RequestBody].self, forKey: .bodies) ?? []
        self.body = try c.decodeIfPresent(Int.self, forKey: .body)
        self.requestTargets = try c.decodeIfPresent([RequestTarget].self, forKey: .requestTargets)
        self.expectStatus = try c.decodeIfPresent(String.self, forKey: .expectStatus)
        self.expectBody = try c.decodeIfPresent(String.self, forKey: .expectBody)
        self.keepAlive = try c.decodeIfPresent(Bool.self, forKey: .keepAlive) ?? true
        self.http2 = try c.decodeIfPresent(Bool.self, forKey: .http2) ?? false
        self.streams = try c.decodeIfPresent(Int.self, forKey: .streams) ?? 1
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

    /// The method of URL `index`'s requests.
    public func method(of index: Int) -> HTTPMethod {
        self.requestTargets?[index].method ?? self.method
    }

    /// What URL `index`'s requests send: its method, the run's headers then its own, its body or the run's.
    public func blueprint(of index: Int) -> RequestBlueprint {
        let target = self.requestTargets?[index]
        let bodyIndex = target?.body ?? self.body
        let body = bodyIndex.flatMap { self.bodies[$0].data.map { [UInt8]($0) } }
        return RequestBlueprint(method: target?.method ?? self.method, headers: self.headers + (target?.headers ?? []),
                                body: body, closes: !self.keepAlive)
    }

    /// The spec as reports and the store keep it: secret header values hidden, bodies by file and size only.
    public var redacted: FetchSpec {
        var copy = self
        copy.headers = self.headers.map(\.redacted)
        copy.requestTargets = self.requestTargets?.map { target in
            var t = target
            t.headers = target.headers.map(\.redacted)
            return t
        }
        copy.bodies = self.bodies.map { var b = $0; b.data = nil; return b }
        return copy
    }
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
    /// The set the run belongs to (`--runs N`, a capacity search's steps), for the store: agents ignore it.
    public var setID: String?

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

    /// The operations each agent is due to start under an open model (`--rate` with `--duration` for fetches,
    /// `--rate` for writes, bounded by `--stonewall`), counted as its schedule counts them; nil in a closed loop.
    public var plannedOpsPerAgent: UInt64? {
        switch self.workload {
        case .fetch:
            guard let fetch = self.fetch, let rate = fetch.rate, let duration = fetch.durationNanos else { return nil }
            // Request i is due at the time the requests due so far reach i; those due before the deadline: the
            // integers below (rate + rampTo) / 2 * D.
            let due = (rate + (fetch.rampTo ?? rate)) / 2 * Double(duration) / 1e9
            var planned = UInt64(due.rounded(.up))
            if let total = fetch.totalRequests { planned = min(planned, UInt64(total)) }
            return planned
        case .write:
            guard let write = self.write, let rate = write.rate else { return nil }
            var planned: UInt64 = 0
            for worker in 0..<self.workers {
                let share = FileNamer.share(of: UInt64(write.files), workers: self.workers, worker: worker).count
                guard let stonewall = write.stonewallNanos else { planned += share; continue }
                let due = rate / Double(self.workers) * Double(stonewall) / 1e9
                planned += min(share, UInt64(due.rounded(.up)))
            }
            return planned
        }
    }

    /// The request as reports and the store keep it: secret header values hidden, bodies by file and size only.
    public var redacted: RunRequest {
        var copy = self
        copy.fetch = self.fetch?.redacted
        return copy
    }

    /// The hard limits every request must respect, whatever an agent's policy allows.
    public enum Limits {
        public static let maxWorkers = 4096
        public static let maxStreams = 1000
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
            if let first = write.firstSubdirectory(workers: self.workers), first + self.workers > Limits.maxDirs {
                throw .usage("--dir-per-worker in a shared target numbers every agent's workers' directories apart: agent \(write.agentIndex ?? 0) with \(self.workers) workers goes past loadgen's limit of \(Limits.maxDirs) directories.")
            }
            if self.mode == .async, write.rate != nil {
                throw .unsupported("--rate paces each worker's creates, which the async mode submits to io_uring in batches without pacing: give --mode sequential, threads or processes with --rate.")
            }
            if self.mode == .async, write.verify, write.size.upperBytes > 1 << 20 {
                throw .unsupported("The async mode verifies files of up to 1 MiB (it reads each whole into memory); these go up to \(write.size): give --mode sequential, threads or processes with --verify.")
            }
        case .fetch:
            guard let fetch = self.fetch, self.write == nil else {
                throw .usage("A fetch run must carry a fetch specification and no write specification.")
            }
            try fetch.validate()
            if fetch.http2, self.mode != .async {
                throw .usage("--http2 runs in async mode only (the \(self.mode.rawValue) mode's blocking client speaks HTTP/1.1, a request at a time per connection): give --mode async.")
            }
            if fetch.http2, self.workers * fetch.streams > Limits.maxWorkers * 16 {
                throw .usage("--workers \(self.workers) x --streams \(fetch.streams) is more than loadgen's limit of \(Limits.maxWorkers * 16) requests in flight.")
            }
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
        if self.verify, !self.read {
            throw .usage("--verify checks what the read phase reads: give --phases with read.")
        }
        if let stonewall = self.stonewallNanos, stonewall == 0 {
            throw .usage("--stonewall must be longer than zero.")
        }
        if let rate = self.rate, !(rate > 0 && rate.isFinite && rate <= 10_000_000) {
            throw .usage("--rate must be a number of files per second above 0 and at most 10000000; got \(rate).")
        }
        if self.dirPerWorker, self.dirs > 1 {
            throw .usage("--dirs \(self.dirs) and --dir-per-worker both say where files go: give one.")
        }
        if let token = self.sharedToken {
            guard token.count == 16, token.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
                throw .usage("The shared target's token '\(token)' is not 16 lowercase hex digits.")
            }
        }
        if let index = self.agentIndex, index < 0 || index >= Self.maxSharedAgents {
            throw .usage("The agent index \(index) is outside 0 to \(Self.maxSharedAgents - 1).")
        }
        if let index = self.neighbourIndex, index < 0 || index >= Self.maxSharedAgents {
            throw .usage("The neighbour index \(index) is outside 0 to \(Self.maxSharedAgents - 1).")
        }
        if self.shift {
            guard self.sharedToken != nil else {
                throw .usage("--shift reads the neighbour's files in the run's one directory: give --shared-target too.")
            }
            guard self.stat || self.read else {
                throw .usage("--shift changes whose files stat and read act on: give --phases with stat or read.")
            }
            if self.stonewallNanos != nil {
                throw .usage("--shift and --stonewall cannot go together: how many files the neighbour made before its stonewall is the neighbour's alone to know.")
            }
        }
        if let tree = self.tree {
            try tree.validate()
            let text = "--tree \(tree.depth):\(tree.fanout)"
            if self.dirs > 1 { throw .usage("--dirs \(self.dirs) and \(text) both say where files go: give one.") }
            if self.dirPerWorker { throw .usage("--dir-per-worker and \(text) both say where files go: give one.") }
            if self.sharedToken != nil {
                throw .usage("\(text) and --shared-target cannot go together: every agent would make the same tree.")
            }
            guard tree.leaves <= self.files else {
                throw .usage("\(text) makes \(tree.leaves) leaf directories, more than the \(self.files) files to spread over them: give a smaller tree or more --files.")
            }
        }
    }
}

extension FetchSpec {
    /// Whether every URL's requests use this method.
    func method(ofAll method: HTTPMethod) -> Bool {
        self.urls.indices.allSatisfy { self.method(of: $0) == method }
    }

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
        guard self.headers.count <= HTTPHeader.maxCount else {
            throw .usage("\(self.headers.count) headers are more than loadgen's limit of \(HTTPHeader.maxCount).")
        }
        for header in self.headers { try header.validate() }
        var total = 0
        for body in self.bodies {
            guard let data = body.data, data.count == body.size else {
                throw .usage("The body from '\(body.file)' did not come with its \(body.size) bytes.")
            }
            total += data.count
        }
        guard total <= RequestBody.maxTotalBytes else {
            throw .usage("The request bodies hold \(total) bytes together, more than loadgen's limit of \(RequestBody.maxTotalBytes).")
        }
        if let body = self.body, !self.bodies.indices.contains(body) {
            throw .usage("The body \(body) is not one of the run's \(self.bodies.count) bodies.")
        }
        if let targets = self.requestTargets {
            guard targets.count == self.urls.count else {
                throw .usage("The targets give \(targets.count) requests for \(self.urls.count) URLs.")
            }
            for (index, target) in targets.enumerated() {
                guard self.headers.count + target.headers.count <= HTTPHeader.maxCount else {
                    throw .usage("The request to \(self.urls[index]) has more than \(HTTPHeader.maxCount) headers.")
                }
                for header in target.headers { try header.validate() }
                if let body = target.body, !self.bodies.indices.contains(body) {
                    throw .usage("The request to \(self.urls[index]) names body \(body), not one of the run's \(self.bodies.count).")
                }
            }
        }
        guard (1...RunRequest.Limits.maxStreams).contains(self.streams) else {
            throw .usage("--streams must be from 1 to \(RunRequest.Limits.maxStreams); got \(self.streams).")
        }
        if self.streams > 1, !self.http2 {
            throw .usage("--streams \(self.streams) sets HTTP/2 streams per connection: give --http2 too.")
        }
        if self.http2 {
            guard self.keepAlive else {
                throw .usage("--no-keepalive would make every HTTP/2 request a connection of its own: give --http2 or --no-keepalive, not both.")
            }
            let all = self.headers + (self.requestTargets ?? []).flatMap(\.headers)
            if let bad = all.first(where: { let name = $0.name.lowercased(); return name == "te" || HTTPHeader.isHTTP2ConnectionSpecific(name) }) {
                throw .usage("The header '\(bad.name)' is HTTP/1.1's connection management, which HTTP/2 forbids (RFC 9113 8.2.2): leave it out with --http2.")
            }
        }
        if let text = self.expectStatus { _ = try StatusExpectation(parsing: text) }
        if let text = self.expectBody {
            _ = try BodyExpectation(text)
            if self.method(ofAll: .head) {
                throw .usage("--expect-body looks in response bodies, and every request is a HEAD, whose responses have none.")
            }
        }
    }
}
