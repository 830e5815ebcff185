import Foundation
import LoadgenCore
import LoadgenReport
import LoadgenStore
import Testing

/// `history show --html` and `history compare --html`: one self-contained page each, whose charts are drawn from,
/// and hold exactly, the stored series.
@Suite(.timeLimit(.minutes(2)))
struct HTMLReportTests {
    /// The values in `name="..."` attributes of elements whose opening tag starts with `<tag`.
    static func elements(_ html: String, _ tag: String) -> [[String: String]] {
        var out: [[String: String]] = []
        var rest = Substring(html)
        while let start = rest.range(of: "<\(tag) ") {
            let end = rest[start.upperBound...].firstIndex(of: ">")!
            let inside = rest[start.upperBound..<end]
            var attributes: [String: String] = [:]
            var scan = inside
            while let eq = scan.range(of: "=\"") {
                let name = scan[..<eq.lowerBound].split(separator: " ").last.map(String.init) ?? ""
                let valueEnd = scan[eq.upperBound...].firstIndex(of: "\"")!
                attributes[name] = String(scan[eq.upperBound..<valueEnd])
                scan = scan[scan.index(after: valueEnd)...]
            }
            out.append(attributes)
            rest = rest[end...]
        }
        return out
    }

    static func pairs(_ text: String) -> [(Double, Double)] {
        text.split(separator: " ").map { pair in
            let parts = pair.split(separator: ",")
            return (Double(parts[0])!, Double(parts[1])!)
        }
    }

    /// The drawn points are one affine map of the data points (per axis): what is drawn is what is stored.
    static func expectAffine(_ data: [(Double, Double)], _ drawn: [(Double, Double)], _ what: String) {
        #expect(data.count == drawn.count, "\(what): \(data.count) values, \(drawn.count) points drawn")
        for axis in 0..<2 {
            let d = data.map { axis == 0 ? $0.0 : $0.1 }, p = drawn.map { axis == 0 ? $0.0 : $0.1 }
            guard let i = d.indices.first(where: { d[$0] != d[0] }) else {
                #expect(Set(p).count == 1, "\(what): equal values drawn apart")
                continue
            }
            _ = i
            // Least squares p = a + b d; drawn at a tenth of a pixel, every point lies within 0.1 of the line.
            let n = Double(d.count), md = d.reduce(0, +) / n, mp = p.reduce(0, +) / n
            let b = zip(d, p).reduce(0) { $0 + ($1.0 - md) * ($1.1 - mp) } / d.reduce(0) { $0 + ($1 - md) * ($1 - md) }
            let a = mp - b * md
            for k in d.indices {
                #expect(abs(a + b * d[k] - p[k]) <= 0.1, "\(what): point \(k) drawn \(p[k]), its value maps to \(a + b * d[k])")
            }
        }
    }

    /// A page references nothing outside itself.
    static func expectSelfContained(_ html: String) {
        #expect(html.hasPrefix("<!DOCTYPE html>"))
        for reference in ["<script", "src=", "href=", "url(", "@import", "<link", "<iframe", "<object", "<img"] {
            #expect(!html.lowercased().contains(reference), "the page holds \(reference)")
        }
    }

    @Test func aRunsPageDrawsItsStoredSeries() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let db = dir + "/db.sqlite"
        let target = dir + "/t"
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        let run = try await TestSupport.run(["coordinate", "--target", target, "--files", "30000", "--mode", "threads",
                                             "--workers", "2", "--interval", "100ms", "--phases", "create,stat,remove", "--json"],
                                            environment: ["LOADGEN_DB": db])
        #expect(run.status == 0, "\(run.stderr)")
        let report = try FrameCodec.makeDecoder().decode(RunReport.self, from: Data(try #require(run.stdout.split(separator: "\n").last).utf8))
        let page = dir + "/run.html"
        let shown = try await TestSupport.run(["history", "show", "last", "--html", page], environment: ["LOADGEN_DB": db])
        #expect(shown.status == 0, "\(shown.stderr)")
        // A second page to the same file replaces the first (no surprise on a second run).
        let again = try await TestSupport.run(["history", "show", "last", "--html", page], environment: ["LOADGEN_DB": db])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".run.html.tmp") }.isEmpty)
        let html = try String(contentsOfFile: page, encoding: .utf8)
        Self.expectSelfContained(html)
        #expect(html.contains(report.runID))

        let store = try RunStore.open(path: db)
        let intervals = try store.intervals(runID: report.runID)
        let cluster = try store.clusterSeries(runID: report.runID)
        let lines = Self.elements(html, "polyline")
        // A rate line for the agent in each phase: every drawn value is a stored interval's, in order, and only the
        // short last interval may be left out.
        for phase in ["main", "stat", "cleanup"] {
            let stored = intervals.filter { $0.phase == phase }.map { ($0.elapsedS, $0.opsPerS) }
            if stored.count < 2 {
                // A phase of one interval is said in a sentence carrying its rate, not drawn as a lone dot.
                let note = Self.elements(html, "p").first { $0["data-phase"] == phase }
                #expect(note?["data-rates"] == stored.first.map { "\(report.perAgent[0].agent)=\($0.1)" }, "\(phase): one interval")
                continue
            }
            guard let line = lines.first(where: { $0["data-series"] == report.perAgent[0].agent && Self.pairs($0["data-points"]!).allSatisfy { p in stored.contains { abs($0.0 - p.0) < 1e-6 } } }) else {
                Issue.record("no rate line for \(phase)")
                continue
            }
            let data = Self.pairs(line["data-points"]!)
            #expect(data.count >= stored.count - 1, "\(phase): \(data.count) of \(stored.count) intervals drawn")
            var cursor = 0
            for point in data {
                guard let at = stored[cursor...].firstIndex(where: { abs($0.0 - point.0) < 1e-6 }) else {
                    Issue.record("\(phase): a drawn point is no stored interval")
                    break
                }
                #expect(abs(stored[at].1 - point.1) <= max(1e-6, stored[at].1 * 1e-8), "\(phase): the rate drawn is the stored one")
                cursor = at + 1
            }
            Self.expectAffine(data, Self.pairs(line["points"]!), "\(phase) rate")
        }
        // The latency lines: the cluster's merged p50 and p99 of each interval of the main phase.
        let main = cluster.filter { $0.phase == "main" }
        let all = main.compactMap(\.p50Us) + main.compactMap(\.p99Us)
        let logarithmic = (all.max() ?? 1) / max(all.min() ?? 1, 1e-9) > 50
        for (name, values) in [("p50", main.compactMap(\.p50Us)), ("p99", main.compactMap(\.p99Us))] {
            let line = try #require(lines.first { $0["data-series"] == name })
            let data = Self.pairs(line["data-points"]!)
            #expect(data.map(\.1) == values.map { Double(String(format: "%.9g", $0))! }, "\(name) over time")
            Self.expectAffine(data.map { ($0.0, logarithmic ? log10($0.1) : $0.1) }, Self.pairs(line["points"]!), name)
        }
        // The distribution: its bins hold every operation of the main phase once.
        let bins = Self.elements(html, "rect").filter { $0["class"] == "bin" }
        #expect(bins.reduce(0) { $0 + UInt64($1["data-value"]!)! } == report.ops)
    }

    @Test func comparisonsOverlayTwoRunsAndBarManyWithTheirSpeedUp() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let db = dir + "/db.sqlite"
        let target = dir + "/t"
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        let run = try await TestSupport.run(["coordinate", "--target", target, "--files", "3000", "--mode", "sequential,threads,async",
                                             "--workers", "2", "--interval", "100ms", "--json"], environment: ["LOADGEN_DB": db])
        #expect(run.status == 0, "\(run.stderr)")
        let reports = try run.stdout.split(separator: "\n").map { try FrameCodec.makeDecoder().decode(RunReport.self, from: Data($0.utf8)) }
        try #require(reports.count == 3)

        let two = dir + "/two.html"
        let compared = try await TestSupport.run(["history", "compare", reports[0].runID, reports[1].runID, "--html", two],
                                                 environment: ["LOADGEN_DB": db])
        #expect(compared.status == 0, "\(compared.stderr)")
        let html2 = try String(contentsOfFile: two, encoding: .utf8)
        Self.expectSelfContained(html2)
        let overlaid = Self.elements(html2, "polyline").map { $0["data-series"] ?? "" }
        #expect(overlaid.contains { $0.contains(reports[0].runID) } && overlaid.contains { $0.contains(reports[1].runID) })
        #expect(html2.contains("B is "), "the verdict")

        let many = dir + "/many.html"
        let all = try await TestSupport.run(["history", "compare"] + reports.map(\.runID) + ["--html", many], environment: ["LOADGEN_DB": db])
        #expect(all.status == 0, "\(all.stderr)")
        let html = try String(contentsOfFile: many, encoding: .utf8)
        Self.expectSelfContained(html)
        let bars = Self.elements(html, "rect").filter { $0["class"] == "bar" }
        #expect(bars.map { $0["data-label"]! } == ["sequential", "threads", "async"])
        for (bar, report) in zip(bars, reports) {
            #expect(abs(Double(bar["data-value"]!)! - report.opsPerS) <= report.opsPerS * 1e-8)
        }
        let speedUp = String(format: "%.2fx", reports[1].opsPerS / reports[0].opsPerS)
        #expect(html.contains("(\(speedUp))"), "the threads bar's speed-up against sequential")
        // Bars share one scale: heights are proportional to the values.
        let heights = bars.map { Double($0["height"]!)! }
        for i in 1..<bars.count {
            #expect(abs(heights[i] / heights[0] - reports[i].opsPerS / reports[0].opsPerS) < 0.01)
        }

        // More than two runs need a page; an unwritable page is one sentence.
        let refused = try await TestSupport.run(["history", "compare"] + reports.map(\.runID), environment: ["LOADGEN_DB": db])
        #expect(refused.status != 0 && refused.stderr.contains("--html"))
        let unwritable = try await TestSupport.run(["history", "show", "last", "--html", dir + "/no/such/dir/p.html"],
                                                   environment: ["LOADGEN_DB": db])
        #expect(unwritable.status != 0 && unwritable.stderr.contains("cannot be written"))
    }
}
