import Foundation
import LoadgenCore
import LoadgenStore

/// Self-contained HTML pages of stored runs (`history show RUN --html`, `history compare A B ... --html`): one file,
/// inline CSS and SVG, no script and nothing fetched, readable on screen and on paper.
public enum HTMLReport {
    /// One run: its summary, phases, agents, ops/s over time per agent, latency percentiles over time, and the
    /// latency distribution of its merged histogram.
    public static func run(_ report: RunReport, intervals: [StoredInterval], cluster: [ClusterPoint],
                           latency: [(valueNanos: UInt64, count: UInt64)]) -> String {
        let unit = report.workload == .write ? "files" : "requests"
        var body = "<h1>Run \(e(report.runID))</h1>\n"
        body += "<p class=\"lead\">\(e(self.headline(report)))</p>\n"
        body += self.summaryTable(report, unit: unit)
        if let message = report.message { body += "<p class=\"note\">\(e(message))</p>\n" }
        if let phases = report.phases, phases.count > 1 { body += self.phaseTable(phases, unit: unit) }
        body += self.agentTable(report, unit: unit)

        let mainPhase = "main"
        let phases = Array(Set(intervals.map(\.phase))).sorted { self.phaseOrder($0) < self.phaseOrder($1) }
        body += "<h2>Throughput over time</h2>\n"
        for phase in phases {
            let name = self.phaseName(phase, report.workload)
            var series: [SVGChart.Series] = []
            for agent in report.perAgent.map(\.agent) {
                let points = self.steady(intervals.filter { $0.agent == agent && $0.phase == phase }.map { (x: $0.elapsedS, y: $0.opsPerS) })
                if !points.isEmpty { series.append(.init(name: agent, points: points)) }
            }
            if series.count > 1 {
                let total = self.steady(cluster.filter { $0.phase == phase }.map { (x: $0.elapsedS, y: $0.opsPerS) })
                series.append(.init(name: "all agents", points: total, dashed: true))
            }
            let title = "\(name): \(unit) per second, per agent"
            if series.allSatisfy({ $0.points.count < 2 }) {
                // One interval (a phase shorter than a tick): a chart of single dots says nothing a sentence does not.
                let rates = series.compactMap { s in s.points.first.map { (name: s.name, rate: $0.y) } }
                body += "<p class=\"note\" data-phase=\"\(e(phase))\" data-rates=\"\(e(rates.map { "\($0.name)=\($0.rate)" }.joined(separator: ",")))\">"
                    + "\(e(name)) lasted a single interval, too short to draw over time: "
                    + "\(e(rates.map { "\($0.name) \(self.compact($0.rate))" }.joined(separator: ", "))) \(e(unit))/s.</p>\n"
                continue
            }
            body += "<figure>\n" + SVGChart.lines(series, title: title, x: self.timeAxis, y: self.rateAxis("\(unit)/s"))
            body += "<figcaption>\(e(title)), each interval's rate as its agent measured it, drawn at the interval's end (the last, when under half the usual length, is left out: its rate over a few milliseconds says little).</figcaption></figure>\n"
        }

        body += "<h2>Latency over time</h2>\n"
        for phase in phases {
            let points = cluster.filter { $0.phase == phase }
            let p50 = points.compactMap { p in p.p50Us.map { (x: p.elapsedS, y: $0) } }
            let p99 = points.compactMap { p in p.p99Us.map { (x: p.elapsedS, y: $0) } }
            guard !p50.isEmpty else { continue }
            if p50.count < 2 {
                body += "<p class=\"note\">\(e(self.phaseName(phase, report.workload))) lasted a single interval: p50 \(e(self.latency(p50[0].y)))"
                    + (p99.first.map { ", p99 \(e(self.latency($0.y)))" } ?? "") + ".</p>\n"
                continue
            }
            let ys = (p50 + p99).map(\.y)
            let log = (ys.max() ?? 1) / max(ys.min() ?? 1, 1e-9) > 50
            let title = "\(self.phaseName(phase, report.workload)): latency percentiles, all agents merged"
            body += "<figure>\n" + SVGChart.lines([.init(name: "p50", points: p50), .init(name: "p99", points: p99)], title: title,
                                                 x: self.timeAxis, y: self.latencyAxis(log: log))
            body += "<figcaption>\(e(title)): each interval's percentiles, read from the agents' histograms of that interval merged.</figcaption></figure>\n"
        }

        body += "<h2>Latency distribution</h2>\n"
        let bins = self.logBins(latency)
        let title = "\(self.phaseName(mainPhase, report.workload)): latency distribution, merged over the run and every agent"
        body += "<figure>\n" + SVGChart.histogram(bins, title: title, x: self.latencyAxis(log: true),
                                                 y: SVGChart.Axis(title: "operations", format: self.compact))
        body += "<figcaption>\(e(title)), in bins of a quarter decade; p50 \(e(self.latency(report.latencyUs.p50))), p99 \(e(self.latency(report.latencyUs.p99))), max \(e(self.latency(report.latencyUs.max))).</figcaption></figure>\n"
        return self.page(title: "loadgen run \(report.runID)", body: body)
    }

    /// Runs side by side. Two runs: their figures with deltas and the verdict, and both series overlaid. More: a
    /// bar chart of their throughput with each one's speed-up against the sequential run (or the first), and every
    /// series overlaid.
    public static func comparison(_ runs: [(report: RunReport, cluster: [ClusterPoint])], comparison: RunComparison?) -> String {
        guard let first = runs.first else { return self.page(title: "loadgen comparison", body: "<p>No runs.</p>") }
        let unit = first.report.workload == .write ? "files" : "requests"
        var body = "<h1>\(runs.count == 2 ? "Run \(e(runs[1].report.runID)) against \(e(runs[0].report.runID))" : "\(runs.count) runs compared")</h1>\n"
        let names = self.runNames(runs.map(\.report))
        if let comparison {
            body += "<p class=\"lead\">\(e(comparison.verdict))</p>\n"
            var rows = "<tr><th></th><th>A \(e(comparison.runA))</th><th>B \(e(comparison.runB))</th><th>change</th></tr>\n"
            for f in comparison.figures {
                let better = f.deltaPct.map { ($0 > 0) == f.higherIsBetter ? "better" : ($0 == 0 ? "" : "worse") } ?? ""
                rows += "<tr><th>\(e(f.name))</th><td>\(e(self.figure(f.a)))</td><td>\(e(self.figure(f.b)))</td><td class=\"\(better)\">\(e(f.deltaPct.map { ($0 >= 0 ? "+" : "") + $0.formatted(decimals: 1) + "%" } ?? "-"))</td></tr>\n"
            }
            body += "<table class=\"figures\">\n\(rows)</table>\n"
        }
        if runs.count > 2 || comparison == nil {
            let base = runs.first { $0.report.mode == .sequential && $0.report.status == .completed }?.report ?? first.report
            let bars = zip(names, runs).map { name, run in
                (label: name, value: run.report.opsPerS,
                 note: base.opsPerS > 0 ? "\((run.report.opsPerS / base.opsPerS).formatted(decimals: 2))x" : nil as String?)
            }
            let title = "\(unit) per second, with the speed-up against \(base.mode == .sequential ? "sequential" : "run \(base.runID)")"
            body += "<figure>\n" + SVGChart.bars(bars, title: title, y: self.rateAxis("\(unit)/s"))
            body += "<figcaption>\(e(title)).</figcaption></figure>\n"
            var rows = "<tr><th>run</th><th>mode</th><th>workers</th><th>agents</th><th>\(unit)/s</th><th>speed-up</th><th>p50</th><th>p99</th><th>errors</th><th>status</th></tr>\n"
            for (run, bar) in zip(runs, bars) {
                let r = run.report
                rows += "<tr><td>\(e(r.runID))</td><td>\(e(r.mode.rawValue))</td><td>\(r.workers)</td><td>\(r.agents)</td><td>\(e(self.rate(r.opsPerS)))</td><td>\(e(bar.note ?? "-"))</td><td>\(e(self.latency(r.latencyUs.p50)))</td><td>\(e(self.latency(r.latencyUs.p99)))</td><td>\(r.errors)</td><td>\(e(r.status.rawValue))</td></tr>\n"
            }
            body += "<table class=\"figures\">\n\(rows)</table>\n"
        }
        let overlay = zip(names, runs).map { name, run in
            SVGChart.Series(name: name, points: self.steady(run.cluster.filter { $0.phase == "main" }.map { (x: $0.elapsedS, y: $0.opsPerS) }))
        }
        body += "<h2>Throughput over time</h2>\n<figure>\n" + SVGChart.lines(overlay, title: "\(unit) per second, all agents", x: self.timeAxis, y: self.rateAxis("\(unit)/s"))
        body += "<figcaption>Each run's rate per interval, its agents summed, from the start of its main phase.</figcaption></figure>\n"
        let p99 = zip(names, runs).map { name, run in
            SVGChart.Series(name: name, points: run.cluster.filter { $0.phase == "main" }.compactMap { p in p.p99Us.map { (x: p.elapsedS, y: $0) } })
        }
        let ys = p99.flatMap(\.points).map(\.y)
        let log = (ys.max() ?? 1) / max(ys.min() ?? 1, 1e-9) > 50
        body += "<h2>p99 latency over time</h2>\n<figure>\n" + SVGChart.lines(p99, title: "p99 latency, all agents merged", x: self.timeAxis, y: self.latencyAxis(log: log))
        body += "<figcaption>Each interval's p99, from the agents' histograms of that interval merged.</figcaption></figure>\n"
        for (name, run) in zip(names, runs) {
            body += "<p class=\"small\"><b>\(e(name))</b>: \(e(self.headline(run.report)))</p>\n"
        }
        return self.page(title: "loadgen comparison of \(runs.map(\.report.runID).joined(separator: ", "))", body: body)
    }

    // MARK: - Tables and words

    static func headline(_ r: RunReport) -> String {
        var parts = ["\(r.workload.rawValue) in \(r.mode.rawValue) mode", "\(r.workers) worker\(r.workers == 1 ? "" : "s")",
                     "\(r.agents) agent\(r.agents == 1 ? "" : "s")", r.status.rawValue]
        if let label = r.label { parts.append("label \(label)") }
        if let write = r.write { parts.append("\(write.files) files of \(write.size) under \(write.target)") }
        if let fetch = r.fetch { parts.append(fetch.urls.count == 1 ? fetch.urls[0] : "\(fetch.urls.count) URLs") }
        if let tls = r.tlsLibrary { parts.append("TLS: \(tls)") }
        parts.append("started \(r.startedAt), loadgen \(r.loadgenVersion)")
        return parts.joined(separator: " · ")
    }

    static func summaryTable(_ r: RunReport, unit: String) -> String {
        let rows: [(String, String)] = [
            (unit, "\(r.ops)"), ("\(unit)/s", self.rate(r.opsPerS)), ("MiB/s", r.mibPerS.formatted(decimals: 2)),
            ("errors", r.errors == 0 ? "0" : "\(r.errors) (" + r.errorsByKind.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + ")"),
            ("duration", "\(r.durationS.formatted(decimals: 3)) s"),
            ("latency", "p50 \(self.latency(r.latencyUs.p50)) · p90 \(self.latency(r.latencyUs.p90)) · p99 \(self.latency(r.latencyUs.p99)) · p99.9 \(self.latency(r.latencyUs.p999)) · max \(self.latency(r.latencyUs.max))"),
            ("workers done", "first \(r.firstDoneS.formatted(decimals: 3)) s · last \(r.lastDoneS.formatted(decimals: 3)) s"),
        ]
        return "<table class=\"summary\">\n" + rows.map { "<tr><th>\(e($0.0))</th><td>\(e($0.1))</td></tr>" }.joined(separator: "\n") + "\n</table>\n"
    }

    static func phaseTable(_ phases: [RunReport.PhaseReport], unit: String) -> String {
        var rows = "<tr><th>phase</th><th>ops</th><th>ops/s</th><th>p50</th><th>p99</th><th>errors</th><th>first done</th><th>last done</th></tr>\n"
        for p in phases {
            rows += "<tr><td>\(e(p.phase ?? ""))</td><td>\(p.ops)</td><td>\(e(self.rate(p.opsPerS)))</td><td>\(e(self.latency(p.latencyUs.p50)))</td><td>\(e(self.latency(p.latencyUs.p99)))</td><td>\(p.errors)</td><td>\(p.firstDoneS.map { $0.formatted(decimals: 3) + " s" } ?? "-")</td><td>\(p.lastDoneS.map { $0.formatted(decimals: 3) + " s" } ?? "-")</td></tr>\n"
        }
        return "<h2>Phases</h2>\n<table>\n\(rows)</table>\n"
    }

    static func agentTable(_ r: RunReport, unit: String) -> String {
        var rows = "<tr><th>agent</th><th>host</th><th>status</th><th>\(unit)</th><th>\(unit)/s</th><th>p50</th><th>p99</th><th>errors</th><th>last done</th><th>rtt</th><th>clock offset</th></tr>\n"
        for a in r.perAgent {
            rows += "<tr><td>\(e(a.agent))</td><td>\(e(a.host))</td><td>\(e(a.status.rawValue))</td><td>\(a.ops)</td><td>\(e(self.rate(a.opsPerS)))</td><td>\(e(self.latency(a.latencyUs.p50)))</td><td>\(e(self.latency(a.latencyUs.p99)))</td><td>\(a.errors)</td><td>\(a.lastDoneS.formatted(decimals: 3)) s</td><td>\(a.rttMs.formatted(decimals: 2)) ms</td><td>\(a.clockOffsetMs.formatted(decimals: 2)) ms</td></tr>\n"
        }
        return "<h2>Agents</h2>\n<table>\n\(rows)</table>\n"
    }

    /// Short names for runs on one chart: the mode, and the id where modes repeat.
    static func runNames(_ reports: [RunReport]) -> [String] {
        let modes = reports.map(\.mode.rawValue)
        return reports.map { r in
            modes.filter { $0 == r.mode.rawValue }.count == 1 && reports.count > 2 ? r.mode.rawValue : "\(r.mode.rawValue) \(r.runID)"
        }
    }

    static func phaseName(_ phase: String, _ workload: WorkloadKind) -> String {
        guard workload == .write, let p = Phase(rawValue: phase) else { return workload == .write ? phase : "fetch" }
        return WriteSpec.name(of: p)
    }

    static func phaseOrder(_ phase: String) -> Int {
        ["mkdir": 0, "main": 1, "stat": 2, "read": 3, "cleanup": 4][phase] ?? 5
    }

    /// A rate series without its last point when that interval is under half the median: a phase's last interval
    /// ends when its work does, often milliseconds after the last tick, and a rate over a few milliseconds says little.
    static func steady(_ points: [(x: Double, y: Double)]) -> [(x: Double, y: Double)] {
        guard points.count > 1 else { return points }
        let spans = points.indices.map { i in points[i].x - (i == 0 ? 0 : points[i - 1].x) }
        let median = spans.sorted()[spans.count / 2]
        return spans.last! < median / 2 ? Array(points.dropLast()) : points
    }

    /// HDR buckets gathered into quarter-decade bins (microseconds).
    static func logBins(_ buckets: [(valueNanos: UInt64, count: UInt64)]) -> [(lower: Double, upper: Double, count: UInt64)] {
        var bins: [Int: UInt64] = [:]
        for (value, count) in buckets where count > 0 {
            let us = max(Double(value) / 1000, 0.001)
            bins[Int(floor(log10(us) * 4)), default: 0] += count
        }
        return bins.keys.sorted().map { k in (pow(10, Double(k) / 4), pow(10, Double(k + 1) / 4), bins[k]!) }
    }

    // MARK: - Formats

    static var timeAxis: SVGChart.Axis { SVGChart.Axis(title: "seconds since the phase started", format: self.plain) }

    /// A tick value with the decimals it needs (at most three).
    @Sendable static func plain(_ v: Double) -> String {
        for decimals in 0...2 where abs(v * pow(10, Double(decimals)) - (v * pow(10, Double(decimals))).rounded()) < 1e-6 {
            return v.formatted(decimals: decimals)
        }
        return v.formatted(decimals: 3)
    }

    static func rateAxis(_ title: String) -> SVGChart.Axis { SVGChart.Axis(title: title, format: self.compact) }

    static func latencyAxis(log: Bool) -> SVGChart.Axis { SVGChart.Axis(title: "latency", logarithmic: log, format: self.latency) }

    @Sendable static func compact(_ v: Double) -> String {
        if v >= 1e6 { return (v / 1e6).formatted(decimals: v >= 1e7 ? 0 : 1) + "M" }
        if v >= 1e3 { return self.plain(v / 1e3) + "k" }
        return self.plain(v)
    }

    static func rate(_ v: Double) -> String {
        guard v.isFinite else { return "-" }
        return v >= 100 ? "\(Int(v.rounded()))" : v.formatted(decimals: 2)
    }

    /// Microseconds as `38.2 µs`, `1.23 ms`, `1.23 s`.
    @Sendable static func latency(_ us: Double) -> String {
        if us == 0 { return "0" }
        if us >= 1e6 { return (us / 1e6).formatted(decimals: 2) + " s" }
        if us >= 1e3 { return (us / 1e3).formatted(decimals: us >= 1e4 ? 0 : 2) + " ms" }
        return us.formatted(decimals: us >= 10 ? 0 : 1) + " µs"
    }

    static func figure(_ v: Double) -> String { v == v.rounded() && abs(v) < 1e15 ? "\(Int64(v))" : v.formatted(decimals: 1) }

    static func e(_ text: String) -> String { SVGChart.escape(text) }

    // MARK: - The page

    static func page(title: String, body: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <meta name="generator" content="loadgen">
        <title>\(e(title))</title>
        <style>
        body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1a1a1a; background: #fff; max-width: 960px; margin: 24px auto; padding: 0 20px; }
        h1 { font-size: 24px; margin: 0 0 4px; }
        h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
        p.lead { color: #444; margin: 0 0 14px; }
        p.note { background: #fff4e5; border-left: 4px solid #E69F00; padding: 6px 10px; }
        p.small { color: #555; font-size: 13px; margin: 4px 0; }
        table { border-collapse: collapse; margin: 8px 0 4px; font-variant-numeric: tabular-nums; }
        th, td { padding: 4px 10px; border-bottom: 1px solid #e6e6e6; text-align: right; white-space: nowrap; }
        th:first-child, td:first-child { text-align: left; }
        table.summary th { text-align: left; color: #555; font-weight: 600; }
        table.summary td { text-align: left; white-space: normal; }
        td.better { color: #00734d; } td.worse { color: #b23c00; }
        figure { margin: 10px 0 18px; break-inside: avoid; page-break-inside: avoid; }
        figcaption { color: #555; font-size: 13px; }
        svg.chart { width: 100%; height: auto; display: block; }
        svg.chart text { font-size: 12px; fill: #333; }
        svg.chart text.axis-title { font-size: 12px; fill: #555; }
        svg.chart text.value { font-weight: 600; }
        svg.chart line.grid { stroke: #e4e4e4; }
        svg.chart line.axis, svg.chart line.tick { stroke: #888; }
        ul.legend { list-style: none; padding: 0; margin: 2px 0 0; display: flex; flex-wrap: wrap; gap: 4px 18px; font-size: 13px; }
        ul.legend .swatch { display: inline-block; width: 22px; margin-right: 6px; vertical-align: middle; }
        p.empty { color: #777; font-style: italic; }
        @media print { body { margin: 0; max-width: none; font-size: 11pt; } h2 { break-after: avoid; } }
        </style>
        </head>
        <body>
        \(body)<footer><p class="small">Made by loadgen from its run store. Percentiles are read from the agents' HDR histograms merged exactly.</p></footer>
        </body>
        </html>

        """
    }
}
