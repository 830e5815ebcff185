import Foundation
import LoadgenCore
import LoadgenCoordinator
import Synchronization

/// What people see: a live line on stderr while a phase runs, then a summary per run and a comparison of modes.
/// With `--json`, stdout carries only one JSON object per run and everything else goes to stderr.
final class Renderer: RunObserver {
    private let json: Bool
    /// A capacity search: each step is a row of a table (and a JSON line), not a run's summary.
    private let searching: Bool
    private let interactive: Bool
    private struct State {
        var lastLiveAt: UInt64 = 0
        var liveShown = false
        var lastLineSecond = -1
    }
    private let state = Mutex(State())

    init(json: Bool, searching: Bool = false) {
        self.json = json
        self.searching = searching
        self.interactive = isatty(2) == 1
    }

    // MARK: - Output streams

    private func human(_ text: String) {
        let data = Data((text.hasSuffix("\n") ? text : text + "\n").utf8)
        if self.json { FileHandle.standardError.write(data) } else { FileHandle.standardOutput.write(data) }
    }

    private func status(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }

    private func clearLiveLine() {
        let shown = self.state.withLock { state -> Bool in
            defer { state.liveShown = false }
            return state.liveShown
        }
        if shown { self.status("\r\u{1B}[2K") }
    }

    // MARK: - RunObserver

    func connected(_ agents: [ConnectedAgent]) {
        guard agents.count > 1 || agents.first?.address != "embedded" else { return }
        var lines = ["agents: \(agents.count)"]
        for agent in agents {
            lines.append("  \(agent.agentID) at \(agent.address): \(agent.cores) cores, rtt \(Format.latency(us: Double(agent.rttNanos) / 1000)), clock offset \(Format.latency(us: Double(abs(agent.clockOffsetNanos)) / 1000))")
        }
        self.status(lines.joined(separator: "\n") + "\n")
    }

    func phaseStarted(_ request: RunRequest, phase: Phase, agents: [ConnectedAgent]) {
        self.state.withLock { $0.lastLineSecond = -1 }
        if phase == (request.write?.phases.first ?? .main) {
            self.status("\(request.runID)  \(request.workload.rawValue) \(request.mode.rawValue)  \(request.workers) worker\(request.workers == 1 ? "" : "s")  \(Self.describe(request))\n")
        }
    }

    func progress(_ snapshot: ProgressSnapshot) {
        let unit = Self.unit(snapshot.request, phase: snapshot.phase)
        var parts = ["  \(Self.verb(snapshot.request, phase: snapshot.phase))"]
        if let expected = snapshot.expectedOps {
            parts.append("\(Format.count(snapshot.ops))/\(Format.count(expected)) \(unit)")
        } else {
            parts.append("\(Format.count(snapshot.ops)) \(unit)")
        }
        parts.append("\(Format.compact(snapshot.currentRate))/s")
        if let expected = snapshot.expectedOps, snapshot.currentRate > 0, expected > snapshot.ops {
            parts.append("ETA \(Format.seconds(Double(expected - snapshot.ops) / snapshot.currentRate))")
        }
        parts.append("errors \(Format.count(snapshot.errors))")
        if snapshot.agentsLost > 0 { parts.append("lost \(snapshot.agentsLost)") }
        let line = parts.joined(separator: "  ")
        let now = MonotonicClock.nowNanos()
        if self.interactive {
            let show = self.state.withLock { state -> Bool in
                guard now &- state.lastLiveAt >= 200_000_000 else { return false }
                state.lastLiveAt = now
                state.liveShown = true
                return true
            }
            if show { self.status("\r\u{1B}[2K" + line) }
        } else {
            let second = Int(snapshot.elapsedNanos / 1_000_000_000)
            let show = self.state.withLock { state -> Bool in
                guard second > state.lastLineSecond, second >= 1 else { return false }
                state.lastLineSecond = second
                return true
            }
            if show { self.status("\(line)  at \(second)s\n") }
        }
    }

    func agentLost(_ agent: ConnectedAgent, message: String) {
        self.clearLiveLine()
        self.status("loadgen: \(message)\n")
    }

    func note(_ message: String) {
        self.clearLiveLine()
        self.status("loadgen: \(message)\n")
    }

    // MARK: - Results

    func runFinished(_ outcome: RunOutcome) {
        self.clearLiveLine()
        let report = outcome.report
        if self.searching {
            for warning in outcome.warnings { self.status("loadgen: \(warning)\n") }
            return
        }
        if self.json {
            FileHandle.standardOutput.write(Data((report.jsonLine() + "\n").utf8))
        }
        self.human(Self.summary(report))
        for warning in outcome.warnings { self.status("loadgen: \(warning)\n") }
    }

    func compare(_ outcomes: [RunOutcome]) {
        guard outcomes.count > 1 else { return }
        let reports = outcomes.map(\.report)
        let base = reports.first { $0.mode == .sequential && $0.status == .completed }?.opsPerS
        let unit = Self.unit(outcomes[0].aggregate.request, phase: .main)
        // With https URLs the modes also differ in TLS library: the table says which.
        let tls = reports.contains { $0.tlsLibrary != nil }
        var rows = [["mode", "workers", "\(unit)/s", "p50", "p99", "errors", "speed-up", "status"] + (tls ? ["tls"] : [])]
        for r in reports {
            rows.append([r.mode.rawValue, String(r.workers), Format.rate(r.opsPerS), Format.latency(us: r.latencyUs.p50),
                         Format.latency(us: r.latencyUs.p99), Format.count(r.errors),
                         base.map { $0 > 0 ? "\((r.opsPerS / $0).formatted(decimals: 2))x" : "-" } ?? "-", r.status.rawValue]
                        + (tls ? [r.tlsLibrary ?? "-"] : []))
        }
        self.human("\n" + Format.table(rows, rightAligned: [1, 2, 3, 4, 5, 6]))
    }

    func setFinished(_ summary: SetSummary) {
        self.clearLiveLine()
        if self.json { FileHandle.standardOutput.write(Data((summary.jsonLine() + "\n").utf8)) }
        var rows = [["mode", "runs", "ops/s median", "min", "max", "p99 median", "min", "max", "not valid"]]
        for m in summary.modes {
            rows.append([m.mode.rawValue, String(m.runs.count), m.opsPerS.map { Format.rate($0.median) } ?? "-",
                         m.opsPerS.map { Format.rate($0.min) } ?? "-", m.opsPerS.map { Format.rate($0.max) } ?? "-",
                         m.p99Us.map { Format.latency(us: $0.median) } ?? "-", m.p99Us.map { Format.latency(us: $0.min) } ?? "-",
                         m.p99Us.map { Format.latency(us: $0.max) } ?? "-", String(m.notValid.count)])
        }
        self.human("\nset \(summary.setID): \(summary.rounds) rounds\n" + Format.table(rows, rightAligned: [1, 2, 3, 4, 5, 6, 7, 8]))
    }

    func searchStep(_ step: SearchSummary.Step) {
        self.clearLiveLine()
        if self.json { FileHandle.standardOutput.write(Data((step.jsonLine() + "\n").utf8)) }
        if step.step == 1 {
            self.status(Format.table([["step", "rate/s", "achieved/s", "latency", "errors", "sent", "outcome", "run"]], rightAligned: []) + "\n")
        }
        let row = [String(step.step), Format.rate(step.rate), Format.rate(step.opsPerS), Format.latency(us: step.latencyUs),
                   "\(step.errorsPct.formatted(decimals: 2))%", step.sentPct.map { "\($0.formatted(decimals: 1))%" } ?? "-",
                   step.outcome.rawValue, step.runID]
        self.status(row.joined(separator: "  ") + (step.reason.map { "  (\($0))" } ?? "") + "\n")
    }

    func searchFinished(_ summary: SearchSummary) {
        self.clearLiveLine()
        if self.json { FileHandle.standardOutput.write(Data((summary.jsonLine() + "\n").utf8)) }
        self.human("\nsearch \(summary.setID) (\(summary.slo.description)): \(summary.conclusion)")
    }

    // MARK: - Text

    static func verb(_ request: RunRequest, phase: Phase = .main) -> String {
        request.workload == .write ? WriteSpec.name(of: phase) : "fetch"
    }

    static func unit(_ request: RunRequest, phase: Phase) -> String {
        request.workload == .write ? (phase == .mkdir ? "dirs" : "files") : "requests"
    }

    static func describe(_ request: RunRequest) -> String {
        if let write = request.write {
            var parts = ["\(Format.count(write.files)) files of \(write.size)", "under \(write.target)"]
            if let preset = write.preset { parts.insert(preset, at: 0) }
            if write.dirs > 1 { parts.append("in \(write.dirs) dirs") }
            if write.dirPerWorker { parts.append("a directory per worker") }
            if write.sharedToken != nil { parts.append("one directory for all agents") }
            if write.shift { parts.append("stat and read the neighbour's files") }
            if let tree = write.tree { parts.append("in a \(tree.depth):\(tree.fanout) tree of \(Format.count(tree.leaves)) leaves") }
            if write.fsync != .none { parts.append("fsync \(write.fsync.rawValue)") }
            if write.keep { parts.append("kept") }
            if let stonewall = write.stonewallNanos { parts.append("stonewall \(DurationText.format(nanos: stonewall))") }
            return parts.joined(separator: ", ")
        }
        if let fetch = request.fetch {
            var parts = ["\(fetch.urls.count) URL\(fetch.urls.count == 1 ? "" : "s")"]
            let methods = Set(fetch.urls.indices.map { fetch.method(of: $0).rawValue })
            if methods != ["GET"] { parts.append(methods.sorted().joined(separator: "/")) }
            if !fetch.bodies.isEmpty { parts.append("\(fetch.bodies.count) bod\(fetch.bodies.count == 1 ? "y" : "ies")") }
            if !fetch.keepAlive { parts.append("no keep-alive") }
            if fetch.http2 { parts.append("HTTP/2, \(fetch.streams) stream\(fetch.streams == 1 ? "" : "s") a connection") }
            return parts.joined(separator: ", ")
        }
        return ""
    }

    static func summary(_ r: RunReport) -> String {
        let unit = r.workload == .write ? "files" : "requests"
        var lines: [String] = []
        var head = "run \(r.runID)  \(r.workload.rawValue)  \(r.mode.rawValue)  \(r.workers) worker\(r.workers == 1 ? "" : "s")"
        if r.agents > 1 { head += "  \(r.agents) agents" }
        if let label = r.label { head += "  [\(label)]" }
        head += "  \(r.status.rawValue)"
        lines.append(head)
        if let mkdir = r.phases?.first(where: { $0.phase == "mkdir" }) {
            lines.append("  mkdir     \(Format.count(mkdir.ops)) dirs made in \(Format.seconds(mkdir.durationS))  \(Format.rate(mkdir.opsPerS)) dirs/s  p99 \(Format.latency(us: mkdir.latencyUs.p99))  errors \(Format.count(mkdir.errors))")
        }
        let done = r.workload == .write ? "created" : "answered"
        lines.append("  \(Format.pad(unit, 9)) \(Format.count(r.ops)) \(done) in \(Format.seconds(r.durationS))  \(Format.rate(r.opsPerS)) \(unit)/s  \(r.mibPerS.formatted(decimals: 2)) MiB/s  errors \(Format.count(r.errors))")
        if r.ops > 0 {
            let l = r.latencyUs
            lines.append("  latency   p50 \(Format.latency(us: l.p50))  p90 \(Format.latency(us: l.p90))  p99 \(Format.latency(us: l.p99))  p99.9 \(Format.latency(us: l.p999))  max \(Format.latency(us: l.max))")
            lines.append("  workers   first done \(Format.seconds(r.firstDoneS))  last done \(Format.seconds(r.lastDoneS))")
        }
        if !r.errorsByKind.isEmpty {
            let kinds = r.errorsByKind.sorted { $0.value > $1.value }.map { "\($0.key) \(Format.count($0.value))" }
            lines.append("  errors    " + kinds.joined(separator: "  "))
            for (kind, sample) in r.errorSamples.sorted(by: { $0.key < $1.key }).prefix(3) {
                lines.append("            \(kind): \(sample)")
            }
        }
        for phase in r.phases ?? [] where phase.phase == "stat" || phase.phase == "read" {
            let did = phase.phase == "stat" ? "stat'ed" : "read"
            var line = "  \(Format.pad(phase.phase ?? "", 9)) \(Format.count(phase.ops)) \(did) in \(Format.seconds(phase.durationS))  \(Format.rate(phase.opsPerS)) \(unit)/s"
            if phase.phase == "read" { line += "  \((Double(phase.bytes) / 1_048_576 / max(phase.durationS, 1e-9)).formatted(decimals: 2)) MiB/s" }
            line += "  p99 \(Format.latency(us: phase.latencyUs.p99))  errors \(Format.count(phase.errors))"
            if !phase.errorsByKind.isEmpty {
                line += " (" + phase.errorsByKind.sorted { $0.value > $1.value }.map { "\($0.key) \(Format.count($0.value))" }.joined(separator: ", ") + ")"
            }
            lines.append(line)
        }
        if let cleanup = r.cleanup {
            lines.append("  cleanup   \(Format.count(cleanup.ops)) removed in \(Format.seconds(cleanup.durationS))  \(Format.rate(cleanup.opsPerS)) \(unit)/s  p99 \(Format.latency(us: cleanup.latencyUs.p99))")
        }
        if let tls = r.tlsLibrary { lines.append("  tls       \(tls)") }
        if let validity = r.validity {
            lines.append("  validity  \(validity.verdict.rawValue)")
            for reason in validity.reasons { lines.append("            \(reason.verdict.rawValue): \(reason.message)") }
        }
        if let message = r.message { lines.append("  note      \(message)") }
        if r.agents == 1, let agent = r.perAgent.first, let dir = agent.runDirectory {
            let fate: String
            if r.write?.keep == true {
                fate = " (kept)"
            } else if let cleanup = r.cleanup {
                // Removed only when cleanup took every file the run made; otherwise the agent's note says what is left.
                fate = cleanup.ops >= r.ops ? " (removed)" : " (left in place: \(Format.count(r.ops - cleanup.ops)) files were not removed)"
            } else {
                fate = ""
            }
            lines.append("  directory \(dir)\(fate)")
        }
        if r.agents > 1 {
            var rows = [["agent", "status", unit, "\(unit)/s", "p99", "errors", "last done"]]
            for a in r.perAgent {
                rows.append([a.agent, a.status.rawValue, Format.count(a.ops), Format.rate(a.opsPerS),
                             Format.latency(us: a.latencyUs.p99), Format.count(a.errors), Format.seconds(a.lastDoneS)])
            }
            lines.append(Format.table(rows, rightAligned: [2, 3, 4, 5, 6]).split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        }
        return lines.joined(separator: "\n")
    }
}
