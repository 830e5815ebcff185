import LoadgenCore
import Prometheus
import Synchronization

/// What an agent or a coordinator shows Prometheus: the current run's figures as they arrive, in the text exposition
/// format (`GET /metrics`).
///
/// Counters and gauges live in swift-prometheus's registry. The latency histogram is rendered here from the
/// interval reports' HDR buckets: swift-prometheus records one observation at a time, and an interval carries
/// thousands of operations already counted per bucket, which are added to the Prometheus buckets in one pass.
///
/// Series carry the labels run, agent, workload, mode and phase (errors also kind). Only the latest run's series
/// are kept: a new run replaces the last one's, so an agent serving runs for weeks holds a run's worth of series.
public final class MetricsExporter: Sendable {
    /// The latency histogram's upper bounds, in seconds: microseconds (a tmpfs create) through seconds (a slow
    /// server), about three a decade.
    public static let latencyBuckets = [
        "0.00001", "0.000025", "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
        "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
    ]
    static let latencyBucketsNanos: [UInt64] = latencyBuckets.map { UInt64((Double($0)! * 1e9).rounded()) }

    public let registry = PrometheusCollectorRegistry()

    private struct SeriesKey: Hashable {
        var agent: String
        var phase: String
    }

    private struct Latency {
        /// Per bucket (not cumulative); the last is +Inf.
        var counts = [UInt64](repeating: 0, count: MetricsExporter.latencyBucketsNanos.count + 1)
        var sumNanos: UInt64 = 0
        var total: UInt64 = 0
    }

    private struct Run {
        var id: String
        var workload: WorkloadKind
        var mode: ExecutionMode
        var phase: String?
        var status: RunStatus = .running
        var counters: [Counter] = []
        var gauges: [Gauge] = []
        /// The counters and gauges above, to register each once.
        var known: Set<ObjectIdentifier> = []
        var latency: [SeriesKey: Latency] = [:]
        var latencyOrder: [SeriesKey] = []
    }

    private struct State {
        var run: Run?
        var agentsLost: Counter?
    }

    private let state = Mutex(State())
    private let agentsConnected: Gauge

    private static var operations: MetricNameDescriptor {
        MetricNameDescriptor(
        namespace: "loadgen", metricName: "operations", unitName: "total",
        helpText: "Operations that succeeded: files made, stat'ed, read or removed, or HTTP responses received.")
    }
    private static var bytes: MetricNameDescriptor {
        MetricNameDescriptor(
        namespace: "loadgen", metricName: "bytes", unitName: "total",
        helpText: "Bytes written, read or received by the operations that succeeded.")
    }
    private static var errors: MetricNameDescriptor {
        MetricNameDescriptor(
        namespace: "loadgen", metricName: "errors", unitName: "total",
        helpText: "Operations that failed, by error kind (schemas/wire/messages.schema.json lists the kinds).")
    }
    private static var runPhase: MetricNameDescriptor {
        MetricNameDescriptor(
        namespace: "loadgen", metricName: "run_phase", unitName: "",
        helpText: "1 for the phase the run is in, 0 for the phases it has left.")
    }
    private static var runStatus: MetricNameDescriptor {
        MetricNameDescriptor(
        namespace: "loadgen", metricName: "run_status", unitName: "",
        helpText: "1 for the run's status (running, completed, partial, failed, aborted), 0 for the others.")
    }
    private static var lost: MetricNameDescriptor {
        MetricNameDescriptor(
        namespace: "loadgen", metricName: "agents_lost", unitName: "total",
        helpText: "Agents the run lost (silent or disconnected); what they reported before is kept.")
    }
    static let latencyName = "loadgen_operation_latency_seconds"

    public init() {
        self.agentsConnected = self.registry.makeGauge(descriptor: MetricNameDescriptor(
            namespace: "loadgen", metricName: "agents_connected", unitName: "",
            helpText: "Agents connected and authenticated (the coordinator's); 1 on an agent serving a run."))
    }

    /// The name a phase has in labels: the write workload's phase names, or `fetch`.
    public static func phaseName(_ phase: Phase, workload: WorkloadKind) -> String {
        workload == .write ? WriteSpec.name(of: phase) : "fetch"
    }

    // MARK: - Events

    /// A run begins: the last run's series go, this one's status is running.
    public func runStarted(runID: String, workload: WorkloadKind, mode: ExecutionMode) {
        self.state.withLock { state in
            if let old = state.run { self.unregister(old) }
            if let lost = state.agentsLost { self.registry.unregisterCounter(lost) }
            var run = Run(id: runID, workload: workload, mode: mode)
            for status in RunStatus.allCases where status != .lost {
                let gauge = self.registry.makeGauge(descriptor: Self.runStatus, labels: self.runLabels(run) + [("status", status.rawValue)])
                gauge.set(to: status == .running ? 1.0 : 0.0)
                run.gauges.append(gauge)
            }
            state.agentsLost = self.registry.makeCounter(descriptor: Self.lost, labels: [("run", runID)])
            state.run = run
        }
    }

    /// The run entered a phase (on a coordinator, all agents together; on an agent, its own).
    public func phaseStarted(runID: String, phase: Phase) {
        self.state.withLock { state in
            guard var run = state.run, run.id == runID else { return }
            let name = Self.phaseName(phase, workload: run.workload)
            guard run.phase != name else { return }
            if let previous = run.phase {
                self.registry.makeGauge(descriptor: Self.runPhase, labels: self.runLabels(run) + [("phase", previous)]).set(to: 0.0)
            }
            let gauge = self.registry.makeGauge(descriptor: Self.runPhase, labels: self.runLabels(run) + [("phase", name)])
            gauge.set(to: 1.0)
            if run.known.insert(ObjectIdentifier(gauge)).inserted { run.gauges.append(gauge) }
            run.phase = name
            state.run = run
        }
    }

    /// One agent's interval report: its counts, errors by kind and latency buckets are added.
    public func record(_ interval: WireMessage.Interval, agent: String) {
        self.state.withLock { state in
            guard var run = state.run, run.id == interval.runID else { return }
            let phase = Self.phaseName(interval.phase, workload: run.workload)
            let labels = self.runLabels(run) + [("agent", agent), ("phase", phase)]
            func count(_ descriptor: MetricNameDescriptor, _ labels: [(String, String)], _ amount: UInt64) {
                let counter = self.registry.makeCounter(descriptor: descriptor, labels: labels)
                counter.increment(by: Int64(clamping: amount))
                if run.known.insert(ObjectIdentifier(counter)).inserted { run.counters.append(counter) }
            }
            count(Self.operations, labels, interval.ops)
            count(Self.bytes, labels, interval.bytes)
            for (kind, n) in interval.errors.dictionary where n > 0 { count(Self.errors, labels + [("kind", kind)], n) }
            let key = SeriesKey(agent: agent, phase: phase)
            if run.latency[key] == nil { run.latencyOrder.append(key) }
            var latency = run.latency[key] ?? Latency()
            let bounds = Self.latencyBucketsNanos
            _ = interval.latency.forEachBucket { value, count in
                // The first bound at or above the bucket's highest value: everything in the HDR bucket is under it.
                var low = 0, high = bounds.count
                while low < high {
                    let mid = (low + high) / 2
                    if bounds[mid] >= value { high = mid } else { low = mid + 1 }
                }
                latency.counts[low] &+= count
                latency.total &+= count
            }
            latency.sumNanos &+= interval.latencySumNanos
            run.latency[key] = latency
            state.run = run
        }
    }

    /// The coordinator's connected agents (an agent sets 1 while it serves a run).
    public func agentsConnected(_ count: Int) {
        self.agentsConnected.set(to: Double(count))
    }

    /// The current run lost an agent.
    public func agentLost() {
        self.state.withLock { state in state.agentsLost?.increment() }
    }

    /// The status shown for `runID` (nil when another run, or none, is shown).
    public func status(runID: String) -> RunStatus? {
        self.state.withLock { $0.run?.id == runID ? $0.run?.status : nil }
    }

    /// The id of the run whose series are shown.
    public var currentRunID: String? { self.state.withLock { $0.run?.id } }

    /// The run ended with `status`.
    public func runEnded(runID: String, status: RunStatus) {
        self.state.withLock { state in
            guard var run = state.run, run.id == runID else { return }
            run.status = status
            for s in RunStatus.allCases where s != .lost {
                self.registry.makeGauge(descriptor: Self.runStatus, labels: self.runLabels(run) + [("status", s.rawValue)])
                    .set(to: s == status ? 1.0 : 0.0)
            }
            if let phase = run.phase {
                self.registry.makeGauge(descriptor: Self.runPhase, labels: self.runLabels(run) + [("phase", phase)]).set(to: 0.0)
            }
            state.run = run
        }
    }

    // MARK: - The page

    /// The whole exposition: the registry's families, then the latency histogram.
    public func page() -> [UInt8] {
        var buffer = self.registry.emitToBuffer()
        self.state.withLock { state in
            guard let run = state.run, !run.latency.isEmpty else { return }
            buffer.append(contentsOf: "# HELP \(Self.latencyName) Latency of the operations that succeeded, from the agents' HDR histograms (each operation counted in the bucket of its HDR bucket's upper value).\n".utf8)
            buffer.append(contentsOf: "# TYPE \(Self.latencyName) histogram\n".utf8)
            for key in run.latencyOrder {
                guard let latency = run.latency[key] else { continue }
                let labels = Self.render(self.runLabels(run) + [("agent", key.agent), ("phase", key.phase)])
                var cumulative: UInt64 = 0
                for (i, bound) in Self.latencyBuckets.enumerated() {
                    cumulative &+= latency.counts[i]
                    buffer.append(contentsOf: "\(Self.latencyName)_bucket{\(labels),le=\"\(bound)\"} \(cumulative)\n".utf8)
                }
                buffer.append(contentsOf: "\(Self.latencyName)_bucket{\(labels),le=\"+Inf\"} \(latency.total)\n".utf8)
                buffer.append(contentsOf: "\(Self.latencyName)_sum{\(labels)} \(Double(latency.sumNanos) / 1e9)\n".utf8)
                buffer.append(contentsOf: "\(Self.latencyName)_count{\(labels)} \(latency.total)\n".utf8)
            }
        }
        return buffer
    }

    // MARK: - Helpers

    private func runLabels(_ run: Run) -> [(String, String)] {
        [("run", run.id), ("workload", run.workload.rawValue), ("mode", run.mode.rawValue)]
    }

    private func unregister(_ run: Run) {
        for counter in run.counters { self.registry.unregisterCounter(counter) }
        for gauge in run.gauges { self.registry.unregisterGauge(gauge) }
    }

    /// `name="value",...` with the exposition format's escapes (backslash, quote, newline).
    static func render(_ labels: [(String, String)]) -> String {
        labels.map { name, value in
            var escaped = ""
            for c in value {
                switch c {
                case "\\": escaped += "\\\\"
                case "\"": escaped += "\\\""
                case "\n": escaped += "\\n"
                default: escaped.append(c)
                }
            }
            return "\(name)=\"\(escaped)\""
        }.joined(separator: ",")
    }
}
