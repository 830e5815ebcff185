import ArgumentParser
import Foundation
import LoadgenAgent
import LoadgenCore
import LoadgenMetrics
import LoadgenWorkloads
import LoadgenCoordinator
import LoadgenStore
import LoadgenWire
import Synchronization

/// `loadgen coordinate`: drive one run (or one per mode) across agents, show it live, print and keep the result.
struct CoordinateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinate",
        abstract: "Run a write or fetch workload on the agents (or an embedded one) and report it.",
        discussion: """
            A directory target runs the write workload: each agent creates --files files of --size bytes in a fresh
            directory of its own under the target (loadgen-<run>-<agent>), then removes them in a timed cleanup
            phase unless --keep is given. An http:// or https:// target runs the fetch workload.

            Without --agents, an embedded agent in this process does the work, so one command measures this machine.
            With several modes (a comma list, or all), the same workload runs once per mode and a table compares
            them, with the speed-up against sequential.

            Examples:
              loadgen coordinate --target /tmp
              loadgen coordinate --target /dev/shm --files 100000 --size 2 --mode threads --workers 2
              loadgen coordinate --target /data --files 1000000 --size 1k-64k --dirs 100 --fsync end --keep
              loadgen coordinate --target /tmp --mode sequential,threads --workers 100 --label tutorial --json
              loadgen coordinate --target http://10.0.0.5/ --requests 10000 --mode async --workers 64
              loadgen coordinate --target http://10.0.0.5/api --method POST --body-file order.json --expect-status 2xx
              loadgen coordinate --targets-file requests.http --rate 500 --duration 1m --mode async
              loadgen coordinate --target /data --mode threads,processes --runs 5
              loadgen coordinate --target http://10.0.0.5/ --mode async --find-max --slo p99=50ms

            Every run's report judges its validity (valid, suspect, invalid) with measured reasons: a generator that fell behind its --rate, a saturated agent, lost agents, errors, clock offsets, too few samples. --runs N makes a set that history compare judges with its noise; --find-max searches for the highest rate within --slo.

            Exit status: 0 every run completed; 1 a run failed, was partial or aborted; 2 the request was refused
            before anything started.
            """
    )

    @OptionGroup(title: "Run")
    var run: RunOptions

    @OptionGroup(title: "Write workload (directory targets)")
    var write: WriteOptions

    @OptionGroup(title: "Fetch workload (http:// and https:// targets)")
    var fetch: FetchOptions

    @OptionGroup(title: "Agents")
    var agents: AgentOptions

    @OptionGroup(title: "Fetch destinations of the embedded agent (remote agents have their own)")
    var destinations: DestinationOptions

    @OptionGroup(title: "Store")
    var store: StoreOptions

    @OptionGroup(title: "Prometheus")
    var metrics: MetricsOptions

    @OptionGroup(title: "Capacity search")
    var search: SearchOptions

    @Flag(help: "Do not store the runs (to measure the store's cost, or on a read-only home).")
    var noStore = false

    func validate() throws {
        do {
            _ = try self.plan()
            _ = try self.agents.secret()
            _ = try self.agents.tlsSettings()
            if self.agents.isRemote { _ = try self.agents.addresses() }
            try self.embeddedDestinations()
            _ = try self.metrics.address()
            _ = try self.searchPlan(self.plan())
        } catch {
            throw ValidationError(error.message)
        }
    }

    /// The embedded agent's destination policy; refused with remote agents, which enforce their own.
    @discardableResult
    func embeddedDestinations() throws(LoadgenError) -> DestinationPolicy {
        if self.destinations.isGiven, self.agents.isRemote {
            throw .usage("--allow-host, --allow-cidr and --deny-cidr are for the embedded agent; agents given with --agents enforce their own (give them to `loadgen agent`).")
        }
        return try self.destinations.policy()
    }

    /// Everything the command will run, checked before anything starts.
    func plan() throws(LoadgenError) -> RunPlan {
        var targets = self.run.targets
        var fileEntries: [TargetsFile.Entry] = []
        if let file = self.fetch.targetsFile {
            fileEntries = try TargetsFile.read(file)
            targets += fileEntries.map(\.url)
        }
        guard !targets.isEmpty else {
            throw .usage("Give a --target: a directory for the write workload, or an http:// or https:// URL to fetch.")
        }
        let urls = targets.filter { $0.contains("://") }
        let dirs = targets.filter { !$0.contains("://") }
        if !urls.isEmpty, !dirs.isEmpty {
            throw .usage("The targets mix URLs (\(urls[0])) and directories (\(dirs[0])): a run is either a write run or a fetch run.")
        }
        guard self.run.workers >= 1 else { throw .usage("--workers must be at least 1; got \(self.run.workers).") }
        guard let interval = DurationText.parseNanos(self.run.interval) else {
            throw .usage("The interval '\(self.run.interval)' is not a duration such as 1s or 500ms.")
        }
        let workers = self.run.workers
        let label = self.run.label
        let seed = self.run.seed ?? UInt64.random(in: 0...UInt64.max)
        let rounds = self.run.runs ?? 1
        guard rounds >= 1, rounds <= 1000 else { throw .usage("--runs must be from 1 to 1000; got \(rounds).") }
        let setID = rounds > 1 ? "set-" + HostEnvironment.makeRunID() : nil
        if !urls.isEmpty {
            try self.write.checkUnused()
            let commandLine = self.run.targets.map { TargetsFile.Entry(url: $0) }
            let spec = try self.fetch.spec(entries: commandLine + fileEntries, rate: self.search.findMax ? nil : self.run.rate)
            // HTTP/2 is the async client's: without --mode, --http2 runs that mode alone.
            let modes = try ExecutionMode.parseList(self.run.mode ?? (spec.http2 ? "async" : "all"), workload: .fetch)
            if spec.http2, let other = modes.first(where: { $0 != .async }) {
                throw .usage("--http2 runs in async mode only (the \(other.rawValue) mode's blocking client speaks HTTP/1.1, a request at a time per connection): give --mode async, or leave --mode out.")
            }
            for mode in modes {
                let probe = RunRequest(runID: "check", label: label, fetch: spec, mode: mode, workers: workers, seed: seed,
                                       intervalNanos: interval)
                try probe.validate()
            }
            return RunPlan(workload: .fetch, modes: modes, rounds: rounds, setID: setID) { mode, runID in
                RunRequest(runID: runID, label: label, fetch: spec, mode: mode, workers: workers, seed: seed, intervalNanos: interval)
            }
        }
        try self.fetch.checkUnused()
        guard dirs.count == 1 else {
            throw .usage("Give one target directory; got \(dirs.count) (\(dirs.joined(separator: ", "))).")
        }
        let target = dirs[0]
        // A preset sets what it names; a flag given beside it wins.
        let preset = try self.write.preset.map { text throws(LoadgenError) in try WritePreset.parse(text) }
        let shape = preset?.parameters(workers: workers)
        var size = shape?.size ?? SizeRange(exactly: 2)
        if let text = self.write.sizeText { size = try SizeRange.parse(text) }
        let modes = try ExecutionMode.parseList(self.run.mode ?? "all", workload: .write)
        var keep = self.write.keep
        var phases = (stat: shape?.stat ?? false, read: shape?.read ?? false)
        if let text = self.write.phases {
            let parsed = try WriteSpec.parsePhases(text)
            if parsed.remove, keep {
                throw .usage("--phases '\(text)' removes the files and --keep keeps them: give one or the other.")
            }
            keep = keep || !parsed.remove
            phases = (parsed.stat, parsed.read)
        }
        var stonewall = shape?.stonewallNanos
        if let text = self.write.stonewall {
            guard let nanos = DurationText.parseNanos(text), nanos > 0 else {
                throw .usage("--stonewall '\(text)' is not a duration such as 300s or 5m.")
            }
            stonewall = nanos
        }
        let tree = try self.write.tree.map { text throws(LoadgenError) in try TreeShape.parse(text) }
        let dirPerWorker = self.write.dirPerWorker || (self.write.dirsCount == nil && tree == nil && shape?.dirPerWorker == true)
        var spec = WriteSpec(target: target, files: self.write.files ?? shape?.files ?? 10_000, size: size, dirs: self.write.dirs,
                             fsync: self.write.fsyncPolicy ?? shape?.fsync ?? .none, keep: keep, stat: phases.stat,
                             read: phases.read, verify: self.write.verify, stonewallNanos: stonewall,
                             dirPerWorker: dirPerWorker, preset: preset?.rawValue, tree: tree,
                             sharedToken: self.write.sharedTarget ? WriteSpec.makeSharedToken() : nil, shift: self.write.shift)
        spec.rate = self.search.findMax ? nil : self.run.rate
        try spec.validate()
        let implied = Set(modes).subtracting(ExecutionMode.named(in: self.run.mode ?? "all"))
        for mode in [.threads] + modes.filter({ !implied.contains($0) }) {
            let probe = RunRequest(runID: "check", label: label, write: spec, mode: mode, workers: workers, seed: seed,
                                   intervalNanos: interval)
            try probe.validate()
        }
        let finalSpec = spec
        return RunPlan(workload: .write, modes: modes, impliedModes: implied, rounds: rounds, setID: setID) { mode, runID in
            RunRequest(runID: runID, label: label, write: finalSpec, mode: mode, workers: workers, seed: seed, intervalNanos: interval)
        }
    }

    /// `--find-max`: the search over the plan's one mode, each step the plan's request at a rate, for the step's
    /// duration; nil without it.
    func searchPlan(_ plan: RunPlan) throws(LoadgenError) -> SearchPlan? {
        let given = [self.search.slo != nil ? "--slo" : nil, self.search.stepDuration != nil ? "--step-duration" : nil].compactMap { $0 }
        guard self.search.findMax else {
            if let first = given.first { throw .usage("\(first) belongs to a capacity search: give --find-max too.") }
            return nil
        }
        guard let text = self.search.slo else {
            throw .usage("--find-max searches for the highest rate within a service level: give --slo, such as --slo p99=50ms.")
        }
        let slo = try ServiceLevel.parse(text)
        var step: UInt64 = 10_000_000_000
        if let text = self.search.stepDuration {
            guard let nanos = DurationText.parseNanos(text), nanos >= 1_000_000_000 else {
                throw .usage("--step-duration '\(text)' is not a duration of 1s or more, such as 10s or 1m.")
            }
            step = nanos
        }
        guard plan.modes.count == 1 else {
            throw .usage("--find-max searches in one mode; --mode names \(plan.modes.count) (\(plan.modes.map(\.rawValue).joined(separator: ","))): give one.")
        }
        if self.run.runs != nil { throw .usage("--find-max and --runs each make a set of runs: give one.") }
        let startRate = self.run.rate ?? 100
        guard startRate > 0, startRate.isFinite else { throw .usage("--rate must be above 0; got \(startRate).") }
        let conflicting = plan.workload == .fetch
            ? [self.fetch.duration != nil ? "--duration" : nil, self.fetch.requests != nil ? "--requests" : nil,
               self.fetch.rampTo != nil ? "--ramp-to" : nil, self.fetch.repeat != nil ? "--repeat" : nil]
            : [self.write.stonewall != nil ? "--stonewall" : nil, self.write.files != nil ? "--files" : nil]
        if let first = conflicting.compactMap({ $0 }).first {
            throw .usage("\(first) conflicts with --find-max, which sizes each step itself (--step-duration at the step's rate).")
        }
        let mode = plan.modes[0]
        let workers = self.run.workers
        let stepNanos = step
        let make: @Sendable (Double, String) -> RunRequest = { ratePerAgent, runID in
            var request = plan.makeRequest(mode, runID)
            if var fetch = request.fetch {
                fetch.rate = ratePerAgent
                fetch.durationNanos = stepNanos
                fetch.requests = nil
                fetch.rampTo = nil
                request.fetch = fetch
            }
            if var write = request.write {
                write.rate = ratePerAgent
                write.stonewallNanos = stepNanos
                // Enough files for the step at its rate, and one per worker beyond.
                write.files = max(1, Int((ratePerAgent * Double(stepNanos) / 1e9).rounded(.up)) + workers)
                request.write = write
            }
            return request
        }
        let probe = make(startRate, "check")
        try probe.validate()
        return SearchPlan(workload: plan.workload, mode: mode, slo: slo, startRate: startRate,
                          setID: "search-" + HostEnvironment.makeRunID(), label: self.run.label, makeRequest: make)
    }

    func run() async throws {
        let plan = try self.plan()
        let search = try self.searchPlan(plan)
        let store = self.noStore ? nil : try self.store.open()
        let renderer = Renderer(json: self.run.json, searching: search != nil)
        let secret = try self.agents.secret()
        let remote = self.agents.isRemote ? try self.agents.addresses() : nil
        let tls = try self.agents.tlsSettings()
        var embeddedPolicy = AgentPolicy.embedded
        embeddedPolicy.destinations = try self.embeddedDestinations()
        let agentConfiguration = AgentConfiguration(
            agentID: HostEnvironment.hostName, host: HostEnvironment.hostName, cores: HostEnvironment.cores,
            loadgenVersion: Loadgen.version, policy: embeddedPolicy, prover: nil,
            workerExecutable: HostEnvironment.executablePath,
            ioUringDisabled: ProcessInfo.processInfo.environment["LOADGEN_NO_IO_URING"].map { _ in "LOADGEN_NO_IO_URING is set." })
        let coordinatorConfiguration = CoordinatorConfiguration(
            loadgenVersion: Loadgen.version, host: HostEnvironment.hostName, prover: secret,
            startDelayNanos: remote == nil ? 50_000_000 : 250_000_000)
        try await self.metrics.serve { exporter in
            let observer: any RunObserver = exporter.map { RunObservers([renderer, CoordinatorMetrics(exporter: $0)]) } ?? renderer
            try await self.drive(plan, search: search, store: store, renderer: renderer, observer: observer, secret: secret,
                                 remote: remote, tls: tls, agentConfiguration: agentConfiguration,
                                 coordinatorConfiguration: coordinatorConfiguration)
        }
    }

    /// Connects (embedded or remote), runs the plan with the store recording, prints the comparison, sets the exit status.
    private func drive(_ plan: RunPlan, search: SearchPlan?, store: RunStore?, renderer: Renderer, observer: any RunObserver,
                       secret: SharedSecret?, remote: [AgentAddress]?, tls: ControlTLS?,
                       agentConfiguration: AgentConfiguration, coordinatorConfiguration: CoordinatorConfiguration) async throws {
        let relay = InterruptRelay()
        let found = Mutex<SearchSummary?>(nil)
        let session: @Sendable (RunPlan, [any AgentLink], (any RunRecorder)?) async throws -> [RunOutcome] = { plan, links, recorder in
            try await CoordinatorSession.with(links: links, configuration: coordinatorConfiguration,
                                              interrupts: relay.stream()) { session throws(LoadgenError) in
                if let search {
                    let (summary, outcomes) = try await session.search(search, makeRunID: { HostEnvironment.makeRunID() },
                                                                       observer: observer, recorder: recorder)
                    found.withLock { $0 = summary }
                    return outcomes
                }
                return try await session.run(plan, makeRunID: { HostEnvironment.makeRunID() }, observer: observer, recorder: recorder)
            }
        }
        // With --agents-dns, each run of a comparison resolves the name anew (a DaemonSet's agents come and go),
        // in a session of its own; otherwise one session runs every mode on the same agents.
        let resolvesEachRun = self.agents.agentsDns != nil && plan.schedule.count > 1 && search == nil
        let drive: @Sendable ((any RunRecorder)?) async throws -> [RunOutcome] = { recorder in
            if resolvesEachRun {
                if let setID = plan.setID {
                    try await recorder?.setStarted(id: setID, kind: "repeat", label: self.run.label, workload: plan.workload,
                                                   modes: plan.modes, requestJSON: "{\"rounds\":\(plan.rounds)}")
                }
                var outcomes: [RunOutcome] = []
                for (index, mode) in plan.schedule.enumerated() where !relay.interrupted {
                    let addresses: [AgentAddress]
                    do throws(LoadgenError) {
                        addresses = index == 0 ? remote! : try self.agents.addresses()
                    } catch {
                        observer.note("Stopped before the \(mode.rawValue) run: \(error.message)")
                        throw ExitCode(1)
                    }
                    outcomes += try await RemoteAgentLink.with(addresses: addresses, tls: tls) { links in
                        try await session(plan.single(mode), links, recorder)
                    }
                }
                if let setID = plan.setID {
                    let summary = SetSummary(setID: setID, rounds: plan.rounds, reports: outcomes.map(\.report))
                    observer.setFinished(summary)
                    try await recorder?.setEnded(id: setID, resultJSON: summary.jsonLine())
                }
                return outcomes
            }
            if let remote {
                return try await RemoteAgentLink.with(addresses: remote, tls: tls) { links in try await session(plan, links, recorder) }
            }
            return try await EmbeddedAgentLink.with(configuration: agentConfiguration) { link in
                try await session(plan, [link], recorder)
            }
        }
        let outcomes: [RunOutcome] = try await relay.relaying(HostEnvironment.interrupts()) {
            if let store {
                return try await StoreRecorder.with(
                    store: store, coordinator: ProcessIdentity.current(host: HostEnvironment.hostName),
                    loadgenVersion: Loadgen.version) { recorder in try await drive(recorder) }
            }
            return try await drive(nil)
        }
        if search != nil {
            // A search ends well when it found a rate within the service level and kept every step.
            let ok = found.withLock { $0?.maxOpsPerS != nil } && !outcomes.contains { $0.storeFailed }
            if !ok { throw ExitCode(1) }
            return
        }
        renderer.compare(outcomes)
        let status = RunPlan.exitStatus(outcomes)
        if status != 0 { throw ExitCode(status) }
    }
}

/// Ctrl-C for a command that may open several coordinator sessions in turn: one signal stream for the command,
/// each press handed to the session running then, and remembered so no later run starts.
final class InterruptRelay: Sendable {
    private let pressed = Mutex(false)
    private let current = Mutex<AsyncStream<Void>.Continuation?>(nil)

    var interrupted: Bool { self.pressed.withLock { $0 } }

    /// The stream for the next session (the last one's goes quiet).
    func stream() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self)
        self.current.withLock { $0?.finish(); $0 = continuation }
        return stream
    }

    /// Runs `body` while Ctrl-Cs from `signals` are handed on.
    func relaying<R: Sendable>(_ signals: AsyncStream<Void>, _ body: () async throws -> R) async throws -> R {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in signals {
                    self.pressed.withLock { $0 = true }
                    _ = self.current.withLock { $0?.yield() }
                }
            }
            defer { group.cancelAll() }
            return try await body()
        }
    }
}

/// Options shared by every run.
struct RunOptions: ParsableArguments {
    @Option(name: .customLong("target"), help: ArgumentHelp(
        "A directory to write files under, or an http(s) URL to fetch (repeatable).", valueName: "DIR|URL"))
    var targets: [String] = []

    @Option(help: ArgumentHelp(
        "sequential, threads, processes or async; a comma list or all runs each and compares them.",
        valueName: "MODE[,MODE...]"))
    var mode: String?

    @Option(help: ArgumentHelp("Concurrency on each agent: threads, worker processes or operations in flight (sequential uses 1).", valueName: "N"))
    var workers: Int = max(2, HostEnvironment.cores)

    @Option(help: ArgumentHelp("A label stored with the run, to find and compare it later.", valueName: "TEXT"))
    var label: String?

    @Option(help: ArgumentHelp("How often agents report (and the live view updates).", valueName: "DURATION"))
    var interval: String = "1s"

    @Option(help: ArgumentHelp("Seed for file names and sizes, to repeat a run exactly (default: random).", valueName: "N"))
    var seed: UInt64?

    @Flag(help: "Print one JSON object per run on stdout (schemas/run-report.schema.json); everything else goes to stderr.")
    var json = false

    @Option(help: ArgumentHelp("Requests (fetch) or files (write) per second on each agent, an open model: latency counts from each operation's due time. With --find-max, the first step's rate for all agents together.", valueName: "R"))
    var rate: Double?

    @Option(help: ArgumentHelp("Repeat the run N times as one set (with several modes, interleaved in each round), for a comparison that knows the noise: the last --json line sums the set up.", valueName: "N"))
    var runs: Int?
}

/// `--find-max`: search for the highest rate within a service level.
struct SearchOptions: ParsableArguments {
    @Flag(help: "Search for the highest rate all agents together sustain within --slo: the rate doubles while steps pass, then bisects to within 5%; each step is a stored run.")
    var findMax = false

    @Option(help: ArgumentHelp("The service level a step must keep, a latency percentile and optionally an error share: p99=50ms or p99.9=200ms,errors=0.1% (default errors=1%).", valueName: "p99=50ms[,errors=1%]"))
    var slo: String?

    @Option(help: ArgumentHelp("How long each step of --find-max runs (default 10s): long enough to be steady.", valueName: "DURATION"))
    var stepDuration: String?
}

/// Options of the write workload.
struct WriteOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Files each agent creates (default 10000).", valueName: "N"))
    var files: Int?

    @Option(name: .customLong("size"), help: ArgumentHelp(
        "Bytes per file: 2, 4k, 1m (powers of 1024), or a range such as 1k-64k drawn uniformly per file (default 2).",
        valueName: "BYTES"))
    var sizeText: String?

    @Option(name: .customLong("dirs"), help: ArgumentHelp("Spread the files over N subdirectories of the run directory.", valueName: "N"))
    var dirsCount: Int?

    @Option(name: .customLong("fsync"), help: ArgumentHelp("none; each (fsync every file, inside its timed operation); end (one syncfs when all are written).", valueName: "none|each|end"))
    var fsyncPolicy: FsyncPolicy?

    @Flag(help: "Keep the files; by default they are removed after the run, timed as its cleanup phase.")
    var keep = false

    @Option(help: ArgumentHelp(
        "The timed phases, in order: create, stat, read, remove (default create,remove; without remove the files are kept).",
        valueName: "LIST"))
    var phases: String?

    @Flag(help: "In the read phase, compare every byte with what create wrote (a mismatch is an error of kind 'mismatch').")
    var verify = false

    @Option(help: ArgumentHelp("Every worker stops creating at this time into the create phase (IO500's stonewall); the later phases act on exactly what each made.", valueName: "DURATION"))
    var stonewall: String?

    @Flag(help: "Each worker's files in a directory of its own (mdtest's -u); by default a run's files share its directory (or --dirs).")
    var dirPerWorker = false

    @Flag(help: "Every agent's files in one run directory under the target (a shared file system's contention case); names never collide, since each carries its agent's place.")
    var sharedTarget = false

    @Flag(help: "With --shared-target: each agent stats and reads its neighbour's files rather than its own (mdtest's -N), so no client's cache holds what it reads.")
    var shift = false

    @Option(help: ArgumentHelp("A directory tree DEPTH levels deep, FANOUT directories under each (mdtest's -z and -b): FANOUT^DEPTH leaves, the files spread evenly over them; made in a timed mkdir phase before create, removed in remove.", valueName: "DEPTH:FANOUT"))
    var tree: String?

    @Option(help: ArgumentHelp("IO500's shapes: mdtest-easy (empty files, a directory per worker, create/stat/remove) or mdtest-hard (3901-byte files in one directory, create/stat/read/remove); a million files per worker, a 300s stonewall; flags given beside it win.", valueName: "NAME"))
    var preset: String?

    var size: String { self.sizeText ?? "2" }
    var dirs: Int { self.dirsCount ?? 1 }
    var fsync: FsyncPolicy { self.fsyncPolicy ?? .none }
    var fileCount: Int { self.files ?? 10_000 }

    /// Refuses write options on a fetch run: an option that would be silently ignored is a mistake to point out.
    func checkUnused() throws(LoadgenError) {
        let given = [self.files != nil ? "--files" : nil, self.sizeText != nil ? "--size" : nil,
                     self.dirsCount != nil ? "--dirs" : nil, self.fsyncPolicy != nil ? "--fsync" : nil,
                     self.keep ? "--keep" : nil, self.phases != nil ? "--phases" : nil,
                     self.verify ? "--verify" : nil, self.stonewall != nil ? "--stonewall" : nil,
                     self.dirPerWorker ? "--dir-per-worker" : nil, self.preset != nil ? "--preset" : nil,
                     self.tree != nil ? "--tree" : nil, self.sharedTarget ? "--shared-target" : nil,
                     self.shift ? "--shift" : nil].compactMap { $0 }
        if let first = given.first {
            throw .usage("\(first) applies to write runs (directory targets), not to fetching URLs.")
        }
    }
}

/// Options of the fetch workload.
struct FetchOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "A file of URLs to fetch, one per line (# starts a comment), or of requests in vegeta's http format ('POST URL', header lines, '@BODYFILE'; README: Targets files).",
        valueName: "FILE"))
    var targetsFile: String?

    @Option(help: ArgumentHelp("Requests each agent makes, cycling through the URLs (default: the URL list once, times --repeat).", valueName: "N"))
    var requests: Int?

    @Option(help: ArgumentHelp("Run for this long instead (30s, 2m); with --requests, whichever ends first.", valueName: "DURATION"))
    var duration: String?

    @Option(help: ArgumentHelp("Move the rate linearly from --rate at the start to this at the end of --duration (a ramp up or down).", valueName: "R"))
    var rampTo: Double?

    @Option(help: ArgumentHelp("Cycle the URL list N times (the tutorial's list * 10).", valueName: "N"))
    var `repeat`: Int?

    @Option(help: ArgumentHelp("Bound on connecting and on the whole request, however slowly the server sends (default 30s).", valueName: "DURATION"))
    var timeout: String?

    @Option(help: ArgumentHelp("GET (default), HEAD, POST, PUT, PATCH, DELETE or OPTIONS: every request's, unless a targets file gives its own.", valueName: "METHOD"))
    var method: String?

    @Option(name: .customLong("header"), help: ArgumentHelp(
        "A header sent with every request (repeatable); replaces loadgen's own Host, User-Agent or Accept of that name.",
        valueName: "'NAME: VALUE'"))
    var headers: [String] = []

    @Option(help: ArgumentHelp("Send this file's bytes as every request's body, with a Content-Length (a targets file's @FILE wins).", valueName: "FILE"))
    var bodyFile: String?

    @Option(help: ArgumentHelp("Count any other final status as an error of kind 'status': codes and classes, 200,201 or 2xx.", valueName: "LIST"))
    var expectStatus: String?

    @Option(help: ArgumentHelp("Count a final response whose first 64 KiB of body lack TEXT as an error of kind 'body'.", valueName: "TEXT"))
    var expectBody: String?

    @Flag(help: "A new connection for every request (Connection: close), its connect and TLS handshake inside the latency.")
    var noKeepalive = false

    @Flag(name: .customLong("http2"), help: "Speak HTTP/2 (async mode, the default with it): h2 by ALPN over https (no fallback to HTTP/1.1), h2c with prior knowledge over http; --workers counts connections.")
    var http2 = false

    @Option(help: ArgumentHelp("With --http2, requests in flight on each connection (default 1; the server's SETTINGS may allow fewer).", valueName: "N"))
    var streams: Int?

    @Option(help: ArgumentHelp("Trust the CA certificates in this PEM file (as well as the system's).", valueName: "FILE"))
    var caFile: String?

    @Flag(help: "Skip TLS certificate verification (explicitly insecure).")
    var insecureTls = false

    func spec(entries: [TargetsFile.Entry], rate: Double?) throws(LoadgenError) -> FetchSpec {
        let urls = entries.map(\.url)
        var durationNanos: UInt64?
        if let duration {
            guard let nanos = DurationText.parseNanos(duration), nanos > 0 else {
                throw .usage("--duration '\(duration)' is not a duration such as 30s or 2m.")
            }
            durationNanos = nanos
        }
        var timeoutNanos: UInt64 = 30_000_000_000
        if let timeout {
            guard let nanos = DurationText.parseNanos(timeout), nanos > 0 else {
                throw .usage("--timeout '\(timeout)' is not a duration such as 5s or 500ms.")
            }
            timeoutNanos = nanos
        }
        var method = HTTPMethod.get
        if let text = self.method {
            guard let m = HTTPMethod(rawValue: text.uppercased()) else {
                throw .usage("The method '\(text)' is not an HTTP method such as GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS.")
            }
            method = m
        }
        var headers: [HTTPHeader] = []
        for text in self.headers { headers.append(try HTTPHeader.parse(text)) }
        // Each body file is read once, however many targets name it.
        var bodies: [RequestBody] = []
        var bodyIndex: [String: Int] = [:]
        func body(_ path: String) throws(LoadgenError) -> Int {
            if let index = bodyIndex[path] { return index }
            bodies.append(try RequestBody.read(path))
            bodyIndex[path] = bodies.count - 1
            return bodies.count - 1
        }
        let runBody = try self.bodyFile.map { path throws(LoadgenError) in try body(path) }
        var requestTargets: [RequestTarget]?
        if entries.contains(where: { $0.method != nil || !$0.headers.isEmpty || $0.bodyFile != nil }) {
            var made: [RequestTarget] = []
            for entry in entries {
                made.append(RequestTarget(method: entry.method, headers: entry.headers,
                                          body: try entry.bodyFile.map { path throws(LoadgenError) in try body(path) }))
            }
            requestTargets = made
        }
        if let caFile, !FileManager.default.isReadableFile(atPath: caFile) {
            throw .usage("The CA file '\(caFile)' cannot be read.")
        }
        let spec = FetchSpec(urls: urls, repeatCount: self.repeat ?? 1, requests: self.requests, durationNanos: durationNanos,
                             rate: rate, rampTo: self.rampTo, timeoutNanos: timeoutNanos, method: method, caFile: self.caFile,
                             insecureTLS: self.insecureTls, headers: headers, bodies: bodies, body: runBody,
                             requestTargets: requestTargets, expectStatus: self.expectStatus, expectBody: self.expectBody,
                             keepAlive: !self.noKeepalive, http2: self.http2, streams: self.streams ?? 1)
        if self.streams != nil, !self.http2 {
            throw .usage("--streams sets HTTP/2 streams per connection: give --http2 too.")
        }
        try spec.validate()
        return spec
    }

    /// Refuses fetch options on a write run.
    func checkUnused() throws(LoadgenError) {
        let given = [self.requests != nil ? "--requests" : nil, self.duration != nil ? "--duration" : nil,
                     self.rampTo != nil ? "--ramp-to" : nil,
                     self.repeat != nil ? "--repeat" : nil,
                     self.timeout != nil ? "--timeout" : nil, self.method != nil ? "--method" : nil,
                     self.caFile != nil ? "--ca-file" : nil, self.insecureTls ? "--insecure-tls" : nil,
                     self.headers.isEmpty ? nil : "--header", self.bodyFile != nil ? "--body-file" : nil,
                     self.expectStatus != nil ? "--expect-status" : nil, self.expectBody != nil ? "--expect-body" : nil,
                     self.noKeepalive ? "--no-keepalive" : nil, self.http2 ? "--http2" : nil,
                     self.streams != nil ? "--streams" : nil].compactMap { $0 }
        if let first = given.first {
            throw .usage("\(first) applies to fetch runs (http:// or https:// targets), not to writing files.")
        }
    }
}

extension FsyncPolicy: ExpressibleByArgument {}

/// Where the agents are, and the secret to prove to them.
struct AgentOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Agents to run on, comma-separated (repeatable); without any, an embedded agent runs here.",
                               valueName: "HOST:PORT,..."))
    var agents: [String] = []

    @Option(help: ArgumentHelp("A file of agent addresses, one per line (# starts a comment).", valueName: "FILE"))
    var agentsFile: String?

    @Option(help: ArgumentHelp("A DNS name whose every address is an agent (a headless Service, say).", valueName: "NAME[:PORT]"))
    var agentsDns: String?

    @Option(help: ArgumentHelp("File holding the secret shared with the agents (mode 0600).", valueName: "FILE"))
    var secretFile: String?

    @OptionGroup
    var tls: TLSOptions

    /// Mutual TLS towards the agents, checked: it needs remote agents (the embedded one has no link to protect).
    func tlsSettings() throws(LoadgenError) -> ControlTLS? {
        if self.tls.isGiven, !self.isRemote {
            throw .usage("--tls-cert, --tls-key and --tls-ca are for links to agents given with --agents; the embedded agent runs in this process.")
        }
        return try self.tls.load(server: false)
    }

    var isRemote: Bool { !self.agents.isEmpty || self.agentsFile != nil || self.agentsDns != nil }

    func secret() throws(LoadgenError) -> SharedSecret? {
        try self.secretFile.map { path throws(LoadgenError) in try SharedSecret.load(path: path, credentialsDirectory: HostEnvironment.credentialsDirectory) }
    }

    func addresses() throws(LoadgenError) -> [AgentAddress] {
        var texts = self.agents.flatMap { $0.split(separator: ",").map(String.init) }
        if let file = self.agentsFile {
            guard let content = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw .usage("The agents file '\(file)' cannot be read.")
            }
            for line in content.split(separator: "\n") {
                let text = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
                let trimmed = text.trimmingCharacters(in: .whitespaces)
                if !trimmed.isEmpty { texts.append(trimmed) }
            }
            if texts.isEmpty { throw .usage("The agents file '\(file)' lists no agents.") }
        }
        var addresses = try texts.map { text throws(LoadgenError) in try AgentAddress.parse(text) }
        if let name = self.agentsDns {
            let base = try AgentAddress.parse(name)
            let resolved = Self.resolve(base.host)
            guard !resolved.isEmpty else { throw .usage("The DNS name '\(base.host)' resolves to no address.") }
            addresses += resolved.map { AgentAddress(host: $0, port: base.port, name: base.host) }
        }
        guard !addresses.isEmpty else { throw .usage("--agents lists no agents.") }
        if let port = addresses.first(where: { $0.port == 0 }) { throw .usage("The agent address \(port) has port 0.") }
        if Set(addresses).count != addresses.count {
            throw .usage("An agent is listed twice: \(addresses.first { a in addresses.filter { $0 == a }.count > 1 }!).")
        }
        return addresses
    }

    /// Every address a name resolves to (IPv4 and IPv6), in the resolver's order, without repeats.
    static func resolve(_ host: String) -> [String] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0 else { return [] }
        defer { freeaddrinfo(result) }
        var out: [String] = []
        var cursor = result
        while let info = cursor {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(info.pointee.ai_addr, info.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 {
                let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !out.contains(text) { out.append(text) }
            }
            cursor = info.pointee.ai_next
        }
        return out
    }
}
