import Foundation

/// One run's summary as `--json` prints it (one object per line) and `history show --json` returns it; described by
/// `schemas/run-report.schema.json`. Field names are snake_case on the wire.
public struct RunReport: Codable, Sendable, Hashable {
    public var runID: String
    public var status: RunStatus
    /// Why the run did not complete, as a sentence.
    public var message: String?
    public var label: String?
    public var workload: WorkloadKind
    public var mode: ExecutionMode
    public var workers: Int
    public var agents: Int
    public var startedAt: String
    public var endedAt: String
    public var loadgenVersion: String
    public var ops: UInt64
    public var errors: UInt64
    public var errorsByKind: [String: UInt64]
    public var errorSamples: [String: String]
    public var bytes: UInt64
    public var durationS: Double
    public var opsPerS: Double
    public var mibPerS: Double
    public var latencyUs: LatencySummary
    public var firstDoneS: Double
    public var lastDoneS: Double
    /// The timed removal of a write run's files (absent with `--keep`).
    public var cleanup: PhaseReport?
    /// A write run's phases in order, each timed on its own: create, then stat and read (with `--phases`), then
    /// remove (absent in runs stored before phases were reported).
    public var phases: [PhaseReport]?
    /// HTTP responses by status class ("2xx": n), fetch runs only.
    public var statusClasses: [String: UInt64]?
    public var redirects: UInt64?
    public var perURL: [URLReport]?
    public var write: WriteSpec?
    public var fetch: FetchSpec?
    /// The TLS library the mode's HTTP client uses, for a fetch run with https URLs: an https comparison of modes
    /// also compares TLS libraries.
    public var tlsLibrary: String?
    public var perAgent: [AgentReport]
    /// Whether the run measured what it claims, and why not (absent in runs stored before validity was judged).
    public var validity: RunValidity?
    /// The set the run belongs to (`--runs`, a capacity search), if any.
    public var setID: String?

    public struct PhaseReport: Codable, Sendable, Hashable {
        /// In `phases`: create, stat, read or remove.
        public var phase: String?
        public var ops: UInt64
        public var errors: UInt64
        public var errorsByKind: [String: UInt64]
        public var bytes: UInt64
        public var durationS: Double
        public var opsPerS: Double
        public var latencyUs: LatencySummary
        /// In `phases`: when the fastest and the slowest worker finished the phase (elbencho's first and last done).
        public var firstDoneS: Double?
        public var lastDoneS: Double?
    }

    public struct AgentReport: Codable, Sendable, Hashable {
        public var agent: String
        public var host: String
        public var address: String
        public var status: RunStatus
        public var message: String?
        public var ops: UInt64
        public var errors: UInt64
        public var errorsByKind: [String: UInt64]
        public var bytes: UInt64
        public var durationS: Double
        public var opsPerS: Double
        public var mibPerS: Double
        public var latencyUs: LatencySummary
        public var firstDoneS: Double
        public var lastDoneS: Double
        public var rttMs: Double
        public var clockOffsetMs: Double
        public var runDirectory: String?
        public var cleanup: PhaseReport?
    }

    public struct URLReport: Codable, Sendable, Hashable {
        public var url: String
        /// The method of the URL's requests (absent in runs stored before methods were per URL).
        public var method: String?
        public var ops: UInt64
        public var errors: UInt64
        public var bytes: UInt64
        public var meanLatencyUs: Double
        public var maxLatencyUs: Double
        public var statusClasses: [String: UInt64]
    }

    public static func statusClassDictionary(_ counts: [UInt64]) -> [String: UInt64] {
        var out: [String: UInt64] = [:]
        for (i, c) in counts.enumerated() where c > 0 { out["\(i + 1)xx"] = c }
        return out
    }

    /// Builds the report from a settled aggregate.
    public init(aggregate: RunAggregate, startedAtWallNanos: UInt64, endedAtWallNanos: UInt64, loadgenVersion: String,
                message: String?) {
        let request = aggregate.request
        let main = aggregate.clusterTally(.main)
        let duration = aggregate.clusterDurationNanos(.main)
        self.runID = request.runID
        self.status = aggregate.status
        self.message = message
        self.label = request.label
        self.workload = request.workload
        self.mode = request.mode
        self.workers = request.workers
        self.agents = aggregate.agents.count
        self.startedAt = Self.iso8601(wallNanos: startedAtWallNanos)
        self.endedAt = Self.iso8601(wallNanos: endedAtWallNanos)
        self.loadgenVersion = loadgenVersion
        self.ops = main.ops
        self.errors = main.errors.total
        self.errorsByKind = main.errors.dictionary
        self.errorSamples = Dictionary(uniqueKeysWithValues: main.errorSamples.map { ($0.key.rawValue, $0.value) })
        self.bytes = main.bytes
        self.durationS = Double(duration) / 1e9
        self.opsPerS = Self.rate(main.ops, duration)
        self.mibPerS = Self.rate(main.bytes, duration) / 1_048_576
        self.latencyUs = main.latencySummary
        let dones = aggregate.agents.compactMap { $0.phases[.main]?.done }
        self.firstDoneS = Double(dones.map(\.firstDoneNanos).min() ?? duration) / 1e9
        self.lastDoneS = Double(dones.map(\.lastDoneNanos).max() ?? duration) / 1e9
        self.cleanup = aggregate.hasPhase(.cleanup)
            ? Self.phaseReport(aggregate.clusterTally(.cleanup), aggregate.clusterDurationNanos(.cleanup)) : nil
        if let write = request.write {
            self.phases = write.phases.filter { aggregate.hasPhase($0) }.map { phase in
                var report = Self.phaseReport(aggregate.clusterTally(phase), aggregate.clusterDurationNanos(phase))
                report.phase = WriteSpec.name(of: phase)
                let dones = aggregate.agents.compactMap { $0.phases[phase]?.done }
                report.firstDoneS = dones.map(\.firstDoneNanos).min().map { Double($0) / 1e9 }
                report.lastDoneS = dones.map(\.lastDoneNanos).max().map { Double($0) / 1e9 }
                return report
            }
        }
        if request.workload == .fetch {
            self.statusClasses = Self.statusClassDictionary(main.statusClasses)
            self.redirects = main.redirects
            if let urls = request.fetch?.urls {
                self.perURL = urls.enumerated().map { index, url in
                    let t = index < main.targets.count ? main.targets[index] : TargetTally()
                    return URLReport(url: url, method: request.fetch?.method(of: index).rawValue, ops: t.ops, errors: t.errors, bytes: t.bytes,
                                     meanLatencyUs: t.ops > 0 ? Double(t.latencyNanosSum) / Double(t.ops) / 1000 : 0,
                                     maxLatencyUs: Double(t.latencyNanosMax) / 1000,
                                     statusClasses: Self.statusClassDictionary(t.statusClasses))
                }
            }
        }
        self.write = request.write
        self.fetch = request.fetch?.redacted
        if let fetch = request.fetch, fetch.urls.contains(where: { $0.lowercased().hasPrefix("https:") }) {
            self.tlsLibrary = request.mode.tlsLibrary(http2: fetch.http2)
        }
        self.validity = RunValidity.judge(aggregate)
        self.setID = request.setID
        self.perAgent = aggregate.agents.indices.map { i in
            let agent = aggregate.agents[i]
            let phase = agent.phase(.main)
            let tally = phase.tally
            let d = aggregate.durationNanos(agent: i, phase: .main)
            return AgentReport(
                agent: agent.agentID, host: agent.host, address: agent.address, status: agent.status,
                message: agent.message, ops: tally.ops, errors: tally.errors.total, errorsByKind: tally.errors.dictionary,
                bytes: tally.bytes, durationS: Double(d) / 1e9, opsPerS: Self.rate(tally.ops, d),
                mibPerS: Self.rate(tally.bytes, d) / 1_048_576, latencyUs: tally.latencySummary,
                firstDoneS: Double(phase.done?.firstDoneNanos ?? d) / 1e9,
                lastDoneS: Double(phase.done?.lastDoneNanos ?? d) / 1e9,
                rttMs: Double(agent.rttNanos) / 1e6, clockOffsetMs: Double(agent.clockOffsetNanos) / 1e6,
                runDirectory: agent.runDirectory,
                cleanup: agent.phases[.cleanup].map { Self.phaseReport($0.tally, aggregate.durationNanos(agent: i, phase: .cleanup)) })
        }
    }

    static func phaseReport(_ tally: Tally, _ duration: UInt64) -> PhaseReport {
        PhaseReport(phase: nil, ops: tally.ops, errors: tally.errors.total, errorsByKind: tally.errors.dictionary, bytes: tally.bytes,
                    durationS: Double(duration) / 1e9, opsPerS: rate(tally.ops, duration), latencyUs: tally.latencySummary,
                    firstDoneS: nil, lastDoneS: nil)
    }

    static func rate(_ count: UInt64, _ nanos: UInt64) -> Double {
        nanos == 0 ? 0 : Double(count) / (Double(nanos) / 1e9)
    }

    /// The instant ``iso8601(wallNanos:)`` wrote, to the millisecond; nil for any other text.
    public static func wallNanos(iso8601 text: String) -> UInt64? {
        let bytes = Array(text.utf8)
        guard bytes.count == 24, bytes[4] == 45, bytes[7] == 45, bytes[10] == 84, bytes[13] == 58, bytes[16] == 58,
              bytes[19] == 46, bytes[23] == 90 else { return nil }
        func number(_ range: Range<Int>) -> Int32? { Int32(String(decoding: bytes[range], as: UTF8.self)) }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10), let hour = number(11..<13),
              let minute = number(14..<16), let second = number(17..<19), let millis = number(20..<23) else { return nil }
        var parts = tm()
        parts.tm_year = year - 1900
        parts.tm_mon = month - 1
        parts.tm_mday = day
        parts.tm_hour = hour
        parts.tm_min = minute
        parts.tm_sec = second
        let seconds = timegm(&parts)
        guard seconds >= 0 else { return nil }
        return UInt64(seconds) * 1_000_000_000 + UInt64(millis) * 1_000_000
    }

    /// `2026-11-25T21:45:12.345Z`.
    public static func iso8601(wallNanos: UInt64) -> String {
        let seconds = Int(wallNanos / 1_000_000_000)
        let millis = Int(wallNanos / 1_000_000 % 1000)
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        func pad(_ v: Int32, _ width: Int) -> String {
            var s = String(v)
            while s.count < width { s = "0" + s }
            return s
        }
        var ms = String(millis)
        while ms.count < 3 { ms = "0" + ms }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(ms)Z"
    }

    /// Encodes the report as one line of JSON.
    public func jsonLine() -> String {
        let encoder = FrameCodec.makeEncoder()
        guard let data = try? encoder.encode(self) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }
}
