/// Two runs side by side: each figure with its delta, and a one-line verdict on B against A.
public struct RunComparison: Codable, Sendable, Hashable {
    public struct Figure: Codable, Sendable, Hashable {
        public var name: String
        public var a: Double
        public var b: Double
        public var delta: Double
        /// The change in percent of A (nil when A is zero).
        public var deltaPct: Double?
        /// Whether larger is better for this figure.
        public var higherIsBetter: Bool
    }

    public var runA: String
    public var runB: String
    public var figures: [Figure]
    /// B's throughput change against A's, in percent (negative: B is slower).
    public var throughputChangePct: Double
    public var verdict: String
    /// How the runs differ in what they asked for (workload, mode, workers, agents, size of the work).
    public var differences: [String]
    /// Either run's validity when it is not `valid`: such a comparison cannot be judged (`--fail-if-slower` exits 2).
    public var notValid: [String]

    public init(a: RunReport, b: RunReport) {
        self.runA = a.runID
        self.runB = b.runID
        let unit = a.workload == .write ? "files/s" : "requests/s"
        func figure(_ name: String, _ x: Double, _ y: Double, higher: Bool) -> Figure {
            Figure(name: name, a: x, b: y, delta: y - x, deltaPct: x != 0 ? (y - x) / x * 100 : nil, higherIsBetter: higher)
        }
        self.figures = [
            figure(unit, a.opsPerS, b.opsPerS, higher: true),
            figure("MiB/s", a.mibPerS, b.mibPerS, higher: true),
            figure("p50 us", a.latencyUs.p50, b.latencyUs.p50, higher: false),
            figure("p90 us", a.latencyUs.p90, b.latencyUs.p90, higher: false),
            figure("p99 us", a.latencyUs.p99, b.latencyUs.p99, higher: false),
            figure("p99.9 us", a.latencyUs.p999, b.latencyUs.p999, higher: false),
            figure("max us", a.latencyUs.max, b.latencyUs.max, higher: false),
            figure("ops", Double(a.ops), Double(b.ops), higher: true),
            figure("errors", Double(a.errors), Double(b.errors), higher: false),
            figure("duration s", a.durationS, b.durationS, higher: false),
        ]
        // Phase by phase: the phases after create that both runs timed (create is the figures above).
        for pa in a.phases ?? [] where pa.phase != "create" {
            guard let name = pa.phase, let pb = (b.phases ?? []).first(where: { $0.phase == name }) else { continue }
            self.figures.append(figure("\(name) \(name == "mkdir" ? "dirs/s" : unit)", pa.opsPerS, pb.opsPerS, higher: true))
            self.figures.append(figure("\(name) p99 us", pa.latencyUs.p99, pb.latencyUs.p99, higher: false))
            self.figures.append(figure("\(name) errors", Double(pa.errors), Double(pb.errors), higher: false))
        }
        self.throughputChangePct = a.opsPerS > 0 ? (b.opsPerS - a.opsPerS) / a.opsPerS * 100 : 0
        var differences: [String] = []
        if a.workload != b.workload { differences.append("workload \(a.workload.rawValue) vs \(b.workload.rawValue)") }
        if a.mode != b.mode { differences.append("mode \(a.mode.rawValue) vs \(b.mode.rawValue)") }
        if a.workers != b.workers { differences.append("workers \(a.workers) vs \(b.workers)") }
        if a.agents != b.agents { differences.append("agents \(a.agents) vs \(b.agents)") }
        if let wa = a.write, let wb = b.write {
            if wa.files != wb.files { differences.append("files \(wa.files) vs \(wb.files)") }
            if wa.size != wb.size { differences.append("size \(wa.size) vs \(wb.size)") }
            if wa.fsync != wb.fsync { differences.append("fsync \(wa.fsync.rawValue) vs \(wb.fsync.rawValue)") }
            if wa.target != wb.target { differences.append("target \(wa.target) vs \(wb.target)") }
            if wa.tree != wb.tree {
                let describe = { (t: TreeShape?) in t.map { "\($0.depth):\($0.fanout)" } ?? "none" }
                differences.append("tree \(describe(wa.tree)) vs \(describe(wb.tree))")
            }
            let pa = wa.phases.map { WriteSpec.name(of: $0) }.joined(separator: ","), pb = wb.phases.map { WriteSpec.name(of: $0) }.joined(separator: ",")
            if pa != pb { differences.append("phases \(pa) vs \(pb)") }
        }
        if let fa = a.fetch, let fb = b.fetch {
            if fa.urls != fb.urls { differences.append("URLs (\(fa.urls.count) vs \(fb.urls.count))") }
            if fa.http2 != fb.http2 { differences.append("HTTP/\(fa.http2 ? "2" : "1.1") vs HTTP/\(fb.http2 ? "2" : "1.1")") }
            if fa.http2, fb.http2, fa.streams != fb.streams { differences.append("streams \(fa.streams) vs \(fb.streams)") }
            if fa.keepAlive != fb.keepAlive { differences.append("keep-alive \(fa.keepAlive ? "on" : "off") vs \(fb.keepAlive ? "on" : "off")") }
        }
        if a.tlsLibrary != b.tlsLibrary {
            differences.append("TLS library \(a.tlsLibrary ?? "none") vs \(b.tlsLibrary ?? "none")")
        }
        if a.status != .completed || b.status != .completed {
            differences.append("status \(a.status.rawValue) vs \(b.status.rawValue)")
        }
        self.differences = differences
        self.notValid = [("A", a), ("B", b)].compactMap { side, r in
            guard let v = r.validity, v.verdict != .valid else { return nil }
            return "\(side) (\(r.runID)) is \(v.verdict.rawValue): \(v.reasons.first?.message ?? "")"
        }
        let change = self.throughputChangePct
        let speed = abs(change) < 0.05 ? "as fast as A" : "\(abs(change).formatted(decimals: 1))% \(change < 0 ? "slower" : "faster")"
        var verdict = "B is \(speed) in \(unit)"
        if a.latencyUs.p99 > 0 {
            let p99 = (b.latencyUs.p99 - a.latencyUs.p99) / a.latencyUs.p99 * 100
            verdict += "; p99 \(p99 >= 0 ? "+" : "-")\(abs(p99).formatted(decimals: 0))%"
        }
        if b.errors != a.errors { verdict += "; errors \(a.errors) -> \(b.errors)" }
        if !differences.isEmpty { verdict += " (the runs differ: \(differences.joined(separator: ", ")))" }
        if !self.notValid.isEmpty { verdict += ". Not judged: " + self.notValid.joined(separator: "; ") }
        self.verdict = verdict + (verdict.hasSuffix(".") ? "" : ".")
    }

    /// The figures as an aligned table.
    public func table() -> String {
        var rows = [["", "A \(self.runA)", "B \(self.runB)", "delta", "change"]]
        for f in self.figures {
            let digits = f.name.hasSuffix("us") || f.name.hasSuffix("/s") || f.name.hasSuffix(" s") ? 1 : 0
            rows.append([f.name, f.a.formatted(decimals: digits), f.b.formatted(decimals: digits),
                         (f.delta >= 0 ? "+" : "") + f.delta.formatted(decimals: digits),
                         f.deltaPct.map { ($0 >= 0 ? "+" : "") + $0.formatted(decimals: 1) + "%" } ?? "-"])
        }
        var widths = Array(repeating: 0, count: 5)
        for row in rows { for (i, c) in row.enumerated() { widths[i] = max(widths[i], c.count) } }
        return rows.map { row in
            row.enumerated().map { i, c in
                let fill = String(repeating: " ", count: widths[i] - c.count)
                return i == 0 ? c + fill : fill + c
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
