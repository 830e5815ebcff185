import ArgumentParser
import Foundation
import LoadgenCore
import LoadgenReport
import LoadgenStore

/// `loadgen history`: every run kept, and comparisons between them.
struct HistoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "List, show and compare stored runs.",
        discussion: """
            Examples:
              loadgen history                              the latest runs, newest first
              loadgen history --label nightly --since 7d   one label's runs of the last week
              loadgen history show last                    everything stored for the latest run
              loadgen history compare last~1 last          is the latest run slower than the one before?
              loadgen history compare A B --fail-if-slower 5   exit 1 if B's throughput is over 5% below A's (for CI)
              loadgen history show last --html run.html    one page with charts, to open in a browser or print
              loadgen history compare last~3 last~2 last~1 last --html modes.html   the modes of one comparison as bars
              loadgen history sets                         sets (--runs N) and capacity searches (--find-max)
              loadgen history compare set-A set-B --fail-if-slower 5   exit 1 only if B is significantly >5% slower

            A run is named by its id, a unique prefix of it, last, or last~N (the N-th before the last); a set by
            its id (set-... or search-...) or a unique prefix of it.
            """,
        subcommands: [ListCommand.self, ShowCommand.self, CompareCommand.self, SetsCommand.self],
        defaultSubcommand: ListCommand.self
    )
}

extension HistoryCommand {
    struct ListCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List runs, newest first.")

        @OptionGroup var store: StoreOptions

        @Option(help: ArgumentHelp("Show at most N runs.", valueName: "N"))
        var limit: Int = 20

        @Option(help: "Only runs with this label.")
        var label: String?

        @Option(help: ArgumentHelp("Only write or fetch runs.", valueName: "write|fetch"))
        var workload: String?

        @Option(help: ArgumentHelp("Only runs in this mode.", valueName: "MODE"))
        var mode: String?

        @Option(help: ArgumentHelp("Only runs that ended so.", valueName: "completed|partial|failed|aborted|running"))
        var status: String?

        @Option(help: ArgumentHelp("Only runs started since: a duration back (7d, 12h, 30m) or a date (2026-11-01).",
                                   valueName: "WHEN"))
        var since: String?

        @Option(help: ArgumentHelp("Only the runs of this set or search (history sets lists them).", valueName: "SET"))
        var set: String?

        @Flag(help: "One JSON array of runs on stdout.")
        var json = false

        @Flag(help: "CSV with a header line on stdout.")
        var csv = false

        func validate() throws {
            guard self.limit >= 1 else { throw ValidationError("--limit must be at least 1; got \(self.limit).") }
            if self.json, self.csv { throw ValidationError("Give --json or --csv, not both.") }
            if let workload, WorkloadKind(rawValue: workload) == nil {
                throw ValidationError("The workload '\(workload)' is not write or fetch.")
            }
            if let mode, ExecutionMode(rawValue: mode) == nil {
                throw ValidationError("The mode '\(mode)' is not one of sequential, threads, processes or async.")
            }
            if let status, RunStatus(rawValue: status) == nil || status == "lost" {
                throw ValidationError("The status '\(status)' is not one of completed, partial, failed, aborted or running.")
            }
            if let since, Self.parseSince(since) == nil {
                throw ValidationError("--since '\(since)' is neither a duration back (7d, 12h, 30m) nor a date (2026-11-01).")
            }
        }

        static func parseSince(_ text: String) -> UInt64? {
            let now = MonotonicClock.wallNanos()
            if text.hasSuffix("d"), let days = Double(text.dropLast()), days >= 0 {
                let back = UInt64(days * 86_400e9)
                return now > back ? now - back : 0
            }
            if let back = DurationText.parseNanos(text), !text.allSatisfy({ $0.isNumber }) {
                return now > back ? now - back : 0
            }
            let fields = text.split(separator: "-", omittingEmptySubsequences: false)
            guard fields.count == 3, fields[0].count == 4, fields[1].count == 2, fields[2].count == 2,
                  let year = Int32(fields[0]), let month = Int32(fields[1]), let day = Int32(fields[2]),
                  (1...12).contains(month), (1...31).contains(day)
            else { return nil }
            var parts = tm()
            parts.tm_year = year - 1900
            parts.tm_mon = month - 1
            parts.tm_mday = day
            let seconds = timegm(&parts)
            return seconds >= 0 ? UInt64(seconds) * 1_000_000_000 : nil
        }

        func run() async throws {
            let store = try self.store.open()
            let setID = try self.set.map { text throws(LoadgenError) in
                guard let id = try store.resolveSetID(text) else {
                    throw LoadgenError.usage("'\(text)' is not a set: set ids begin with set- or search- (see loadgen history sets).")
                }
                return id
            }
            let runs = try store.listRuns(RunFilter(
                label: self.label, workload: self.workload, mode: self.mode, status: self.status,
                sinceWallNanos: self.since.flatMap(Self.parseSince), setID: setID, limit: self.limit))
            if self.json {
                let data = try FrameCodec.makeEncoder().encode(runs)
                print(String(decoding: data, as: UTF8.self))
                return
            }
            if self.csv {
                print("run_id,started_at,label,workload,mode,workers,agents,status,ops,errors,duration_s,ops_per_s,mib_per_s,p50_us,p99_us,target,validity,set_id")
                for r in runs {
                    let fields: [String] = [
                        r.runID, r.startedAt, r.label ?? "", r.workload, r.mode, String(r.workers), String(r.agents),
                        r.status, String(r.ops), String(r.errors), r.durationS.map { "\($0)" } ?? "",
                        r.opsPerS.map { "\($0)" } ?? "", r.mibPerS.map { "\($0)" } ?? "", r.p50Us.map { "\($0)" } ?? "",
                        r.p99Us.map { "\($0)" } ?? "", r.target, r.validity ?? "", r.setID ?? "",
                    ]
                    print(fields.map(Self.csvField).joined(separator: ","))
                }
                return
            }
            guard !runs.isEmpty else {
                FileHandle.standardError.write(Data("No runs stored in \(self.store.path) match.\n".utf8))
                return
            }
            var rows = [["run", "started", "label", "workload", "mode", "workers", "status", "ops", "ops/s", "p99", "errors", "validity", "set"]]
            for r in runs {
                rows.append([r.runID, Self.shortTime(r.startedAt), r.label ?? "", r.workload, r.mode, String(r.workers),
                             r.status, Format.count(r.ops), r.opsPerS.map(Format.rate) ?? "-",
                             r.p99Us.map { Format.latency(us: $0) } ?? "-", Format.count(r.errors), r.validity ?? "-",
                             r.setID ?? ""])
            }
            print(Format.table(rows, rightAligned: [5, 7, 8, 9, 10]))
        }

        static func csvField(_ text: String) -> String {
            text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" })
                ? "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : text
        }

        /// `2026-11-25T21:45:12.345Z` → `2026-11-25 21:45:12`.
        static func shortTime(_ iso: String) -> String {
            String(iso.prefix(19)).replacingOccurrences(of: "T", with: " ")
        }
    }

    struct ShowCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Show everything stored for a run.")

        @OptionGroup var store: StoreOptions

        @Argument(help: ArgumentHelp("The run: an id, a unique prefix, last, or last~N.", valueName: "RUN"))
        var run: String

        @Flag(help: "One JSON object: the run report plus an intervals array.")
        var json = false

        @Option(help: ArgumentHelp("Also write the run as one self-contained HTML page with charts (no scripts, nothing fetched).", valueName: "FILE"))
        var html: String?

        func run() async throws {
            let store = try self.store.open()
            let id = try store.resolveRunID(self.run)
            guard let report = try store.report(runID: id) else {
                throw LoadgenError.usage("There is no run '\(self.run)' in the store.")
            }
            let intervals = try store.intervals(runID: id)
            if let html {
                let page = HTMLReport.run(report, intervals: intervals, cluster: try store.clusterSeries(runID: id),
                                          latency: try store.latencyBuckets(runID: id))
                try HTMLOutput.write(page, to: html)
            }
            if self.json {
                let encoder = FrameCodec.makeEncoder()
                var object = try JSONSerialization.jsonObject(with: try encoder.encode(report)) as! [String: Any]
                object["intervals"] = try JSONSerialization.jsonObject(with: try encoder.encode(intervals))
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
                print(String(decoding: data, as: UTF8.self))
                return
            }
            print(Renderer.summary(report))
            print("  started   \(report.startedAt)  ended \(report.endedAt)  loadgen \(report.loadgenVersion)")
            if let write = report.write {
                print("  request   \(Format.count(write.files)) files of \(write.size) under \(write.target), dirs \(write.dirs), fsync \(write.fsync.rawValue)\(write.keep ? ", kept" : "")")
            }
            guard !intervals.isEmpty else { return }
            print("")
            var rows = [["agent", "phase", "#", "at", "ops", "ops/s", "p50", "p99", "errors"]]
            for i in intervals {
                rows.append([i.agent, i.phase, String(i.seq), Format.seconds(i.elapsedS), Format.count(i.ops),
                             Format.rate(i.opsPerS), i.p50Us.map { Format.latency(us: $0) } ?? "-",
                             i.p99Us.map { Format.latency(us: $0) } ?? "-", Format.count(i.errors)])
            }
            print(Format.table(rows, rightAligned: [2, 3, 4, 5, 6, 7, 8]))
        }
    }

    struct CompareCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "compare", abstract: "Compare two runs side by side, with deltas and a verdict.")

        @OptionGroup var store: StoreOptions

        @Argument(help: ArgumentHelp("The baseline run, then the run to judge against it (more runs: --html compares them all).", valueName: "RUN_A RUN_B"))
        var runs: [String] = []

        @Option(help: ArgumentHelp("Also write the comparison as one self-contained HTML page: both runs' series overlaid, or with more than two runs a bar chart of them with their speed-up.", valueName: "FILE"))
        var html: String?

        var a: String { self.runs[0] }
        var b: String { self.runs[1] }

        @Flag(help: "One JSON object with both runs' figures, the deltas and the verdict.")
        var json = false

        @Option(help: ArgumentHelp("Exit 1 when B's throughput is more than PCT percent below A's (for sets: significantly so); exit 2 (cannot judge) when either side is not valid.", valueName: "PCT"))
        var failIfSlower: Double?

        func validate() throws {
            guard self.runs.count >= 2 else {
                throw ValidationError("Give two runs to compare (RUN_A RUN_B); got \(self.runs.count).")
            }
            if self.runs.count > 2, self.html == nil {
                throw ValidationError("More than two runs are compared on an HTML page only: give --html FILE, or two runs.")
            }
            if self.runs.count > 2, self.json || self.failIfSlower != nil {
                throw ValidationError("--json and --fail-if-slower judge two runs; got \(self.runs.count).")
            }
            if let pct = self.failIfSlower, !(pct >= 0 && pct.isFinite) {
                throw ValidationError("--fail-if-slower must be a percentage of 0 or more; got \(pct).")
            }
        }

        func run() async throws {
            let store = try self.store.open()
            let setIDs = try self.runs.map { text throws(LoadgenError) in try store.resolveSetID(text) }
            if self.runs.count == 2, setIDs.contains(where: { $0 != nil }) {
                guard self.html == nil else {
                    throw LoadgenError.usage("--html draws runs; for a set, give its runs (loadgen history --set \(setIDs.compactMap { $0 }[0])).")
                }
                return try self.compareSets(store, a: try Self.side(self.runs[0], setIDs[0], store), b: try Self.side(self.runs[1], setIDs[1], store))
            }
            if let set = setIDs.compactMap({ $0 }).first {
                throw LoadgenError.usage("A set (\(set)) is compared with one other set or run; got \(self.runs.count) to compare.")
            }
            let ids = try self.runs.map { text throws(LoadgenError) in try store.resolveRunID(text) }
            var reports: [RunReport] = []
            for (text, id) in zip(self.runs, ids) {
                guard let report = try store.report(runID: id) else {
                    throw LoadgenError.usage("The run '\(text)' has no figures stored.")
                }
                reports.append(report)
            }
            let (a, b) = (reports[0], reports[1])
            let comparison = RunComparison(a: a, b: b)
            if let html {
                let runs = try zip(reports, ids).map { report, id throws(LoadgenError) in (report: report, cluster: try store.clusterSeries(runID: id)) }
                try HTMLOutput.write(HTMLReport.comparison(runs, comparison: reports.count == 2 ? comparison : nil), to: html)
                if reports.count > 2 { return }
            }
            if self.json {
                print(String(decoding: try FrameCodec.makeEncoder().encode(comparison), as: UTF8.self))
            } else {
                print(comparison.table())
                print(comparison.verdict)
            }
            if self.failIfSlower != nil, !comparison.notValid.isEmpty {
                FileHandle.standardError.write(Data("loadgen: cannot judge: \(comparison.notValid.joined(separator: "; "))\n".utf8))
                throw ExitCode(2)
            }
            if let pct = self.failIfSlower, comparison.throughputChangePct < -pct {
                FileHandle.standardError.write(Data("loadgen: run \(b.runID) is \((-comparison.throughputChangePct).formatted(decimals: 1))% slower than \(a.runID), more than the \(pct.formatted(decimals: 1))% allowed.\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}

extension HistoryCommand.CompareCommand {
    /// A side of a comparison: a set's runs, or one run as a set of one.
    static func side(_ text: String, _ setID: String?, _ store: RunStore) throws(LoadgenError) -> (id: String, runIDs: [String]) {
        if let setID { return (setID, try store.runIDs(inSet: setID)) }
        let id = try store.resolveRunID(text)
        return (id, [id])
    }

    /// Two sets (or a set and a run): each mode both ran, judged with its uncertainty.
    func compareSets(_ store: RunStore, a: (id: String, runIDs: [String]), b: (id: String, runIDs: [String])) throws {
        func reports(_ ids: [String]) throws(LoadgenError) -> [RunReport] {
            var out: [RunReport] = []
            for id in ids { if let r = try store.report(runID: id) { out.append(r) } }
            return out
        }
        let ra = try reports(a.runIDs), rb = try reports(b.runIDs)
        let comparison = SetComparison(a: a.id, reportsA: ra, b: b.id, reportsB: rb)
        guard !comparison.modes.isEmpty else {
            throw LoadgenError.usage("\(a.id) and \(b.id) ran no mode in common: nothing to compare.")
        }
        if self.json {
            print(String(decoding: try FrameCodec.makeEncoder().encode(comparison), as: UTF8.self))
        } else {
            print("A \(a.id) (\(ra.count) run\(ra.count == 1 ? "" : "s")) against B \(b.id) (\(rb.count) run\(rb.count == 1 ? "" : "s")), throughput:")
            for m in comparison.modes { print("  \(m.mode.rawValue): \(m.verdict)") }
            for note in comparison.notValid { print("  not valid: \(note)") }
        }
        if let pct = self.failIfSlower {
            if !comparison.notValid.isEmpty {
                FileHandle.standardError.write(Data("loadgen: cannot judge: \(comparison.notValid.count) run\(comparison.notValid.count == 1 ? " is" : "s are") not valid (\(comparison.notValid[0])).\n".utf8))
                throw ExitCode(2)
            }
            if let slower = comparison.modes.first(where: { $0.judgment.significant && $0.judgment.changePct < -pct }) {
                FileHandle.standardError.write(Data("loadgen: \(b.id) is slower than \(a.id) in \(slower.mode.rawValue) beyond the noise and the \(pct.formatted(decimals: 1))% allowed: \(slower.verdict).\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}

/// Where `--html` pages go.
enum HTMLOutput {
    /// Writes `page` to `path` whole (a temporary file renamed into place), saying where on stderr.
    static func write(_ page: String, to path: String) throws(LoadgenError) {
        let url = URL(fileURLWithPath: path)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        do {
            try Data(page.utf8).write(to: temporary)
            // rename(2) replaces a page already there in one step (Foundation's replaceItemAt fails on Linux when the
            // destination exists, so a second --html to the same file was refused).
            guard rename(temporary.path, url.path) == 0 else {
                throw LoadgenError.usage("The HTML page cannot be written to '\(path)': \(errnoDescription(errno)).")
            }
        } catch let error as LoadgenError {
            try? FileManager.default.removeItem(at: temporary)
            throw error
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw LoadgenError.usage("The HTML page cannot be written to '\(path)': \(error.localizedDescription)")
        }
        FileHandle.standardError.write(Data("loadgen: wrote \(path)\n".utf8))
    }
}

extension HistoryCommand {
    /// `loadgen history sets`: the sets (`--runs N`) and capacity searches (`--find-max`), newest first.
    struct SetsCommand: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sets", abstract: "List sets of runs (--runs) and capacity searches (--find-max), newest first.")

        @OptionGroup var store: StoreOptions

        @Option(help: ArgumentHelp("Show at most N sets.", valueName: "N"))
        var limit: Int = 20

        @Flag(help: "One JSON array of sets on stdout, each with its result.")
        var json = false

        func validate() throws {
            guard self.limit >= 1 else { throw ValidationError("--limit must be at least 1; got \(self.limit).") }
        }

        func run() async throws {
            let store = try self.store.open()
            let sets = try store.listSets(limit: self.limit)
            if self.json {
                let objects: [[String: Any]] = try sets.map { set in
                    var object: [String: Any] = ["set_id": set.id, "kind": set.kind, "workload": set.workload,
                                                 "modes": set.modes.split(separator: ",").map(String.init),
                                                 "started_at": set.startedAt, "runs": try store.runIDs(inSet: set.id)]
                    if let label = set.label { object["label"] = label }
                    if let result = set.result, let parsed = try? JSONSerialization.jsonObject(with: Data(result.utf8)) {
                        object["result"] = parsed
                    }
                    return object
                }
                let data = try JSONSerialization.data(withJSONObject: objects, options: [.sortedKeys, .withoutEscapingSlashes])
                print(String(decoding: data, as: UTF8.self))
                return
            }
            guard !sets.isEmpty else {
                FileHandle.standardError.write(Data("No sets or searches stored in \(self.store.path).\n".utf8))
                return
            }
            var rows = [["set", "kind", "started", "label", "workload", "modes", "runs", "result"]]
            for set in sets {
                rows.append([set.id, set.kind, ListCommand.shortTime(set.startedAt), set.label ?? "", set.workload, set.modes,
                             String(try store.runIDs(inSet: set.id).count), Self.result(set)])
            }
            print(Format.table(rows, rightAligned: [6]))
        }

        /// The set's result in a few words: a search's capacity, or each mode's median throughput.
        static func result(_ set: RunSetRecord) -> String {
            guard let text = set.result else { return set.endedAtNanos == nil ? "(unfinished)" : "-" }
            let decoder = FrameCodec.makeDecoder()
            if set.kind == "search", let search = try? decoder.decode(SearchSummary.self, from: Data(text.utf8)) {
                guard let best = search.maxOpsPerS else { return "none within \(search.slo.description)" }
                return "max \(Format.rate(best))/s within \(search.slo.description) (run \(search.bestRunID ?? "-"))"
            }
            if let summary = try? decoder.decode(SetSummary.self, from: Data(text.utf8)) {
                return summary.modes.map { "\($0.mode.rawValue) \($0.opsPerS.map { Format.rate($0.median) } ?? "-")/s" }
                    .joined(separator: ", ") + " (medians)"
            }
            return "-"
        }
    }
}
