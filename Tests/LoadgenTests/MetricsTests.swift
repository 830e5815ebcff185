import Foundation
import LoadgenAgent
import LoadgenCoordinator
import LoadgenCore
import LoadgenMetrics
import LoadgenWire
import Testing

/// The Prometheus page (`--metrics-listen`): served over HTTP, parsed, and its names, types and values held to a
/// real run's report.
@Suite(.timeLimit(.minutes(2)))
struct MetricsTests {
    /// One sample of the text exposition format.
    struct Sample: Hashable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    /// A strict reader of the text format: every family declared once with HELP and TYPE before its samples, every
    /// sample line `name{labels} value` with quoted, escaped label values. Returns the types and the samples.
    static func parse(_ page: String) throws -> (types: [String: String], samples: [Sample]) {
        var types: [String: String] = [:]
        var helped: Set<String> = []
        var samples: [Sample] = []
        for line in page.split(separator: "\n", omittingEmptySubsequences: false) where !line.isEmpty {
            if line.hasPrefix("# HELP ") {
                let name = String(line.dropFirst(7).prefix { $0 != " " })
                #expect(helped.insert(name).inserted, "HELP for \(name) twice")
                continue
            }
            if line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst(7).split(separator: " ")
                #expect(parts.count == 2)
                #expect(types[String(parts[0])] == nil, "TYPE for \(parts[0]) twice")
                types[String(parts[0])] = String(parts[1])
                continue
            }
            #expect(!line.hasPrefix("#"), "an unknown comment: \(line)")
            var rest = Substring(line)
            let name = String(rest.prefix { $0 != "{" && $0 != " " })
            rest = rest.dropFirst(name.count)
            var labels: [String: String] = [:]
            if rest.hasPrefix("{") {
                rest = rest.dropFirst()
                while !rest.hasPrefix("}") {
                    let key = String(rest.prefix { $0 != "=" })
                    rest = rest.dropFirst(key.count)
                    guard rest.hasPrefix("=\"") else { throw LoadgenError.io("bad label in \(line)") }
                    rest = rest.dropFirst(2)
                    var value = ""
                    while let c = rest.first, c != "\"" {
                        if c == "\\" {
                            rest = rest.dropFirst()
                            switch rest.first { case "n": value.append("\n"); case let other?: value.append(other); case nil: break }
                        } else {
                            value.append(c)
                        }
                        rest = rest.dropFirst()
                    }
                    rest = rest.dropFirst()
                    labels[key] = value
                    if rest.hasPrefix(",") { rest = rest.dropFirst() }
                }
                rest = rest.dropFirst()
            }
            guard rest.hasPrefix(" "), let value = Double(rest.dropFirst()) else { throw LoadgenError.io("bad sample: \(line)") }
            let family = ["_bucket", "_sum", "_count"].first { name.hasSuffix($0) && types[String(name.dropLast($0.count))] == "histogram" }
                .map { String(name.dropLast($0.count)) } ?? name
            #expect(types[family] != nil && helped.contains(family), "\(name) has no TYPE and HELP before it")
            samples.append(Sample(name: name, labels: labels, value: value))
        }
        return (types, samples)
    }

    /// `GET path` over a plain socket; the whole response.
    static func get(_ port: Int, _ path: String = "/metrics", method: String = "GET") throws -> (status: Int, body: String) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw LoadgenError.io("connect failed") }
        let request = "\(method) \(path) HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        _ = request.withCString { send(fd, $0, strlen($0), 0) }
        var data = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            data += buffer[0..<n]
        }
        let text = String(decoding: data, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw LoadgenError.io("no header end") }
        let status = Int(text.split(separator: " ")[1]) ?? 0
        return (status, String(text[split.upperBound...]))
    }

    static func value(_ samples: [Sample], _ name: String, _ labels: [String: String]) -> Double? {
        samples.first { sample in sample.name == name && labels.allSatisfy { key, value in sample.labels[key] == value } }?.value
    }

    /// Two agents, each with its own page, and the coordinator's page: every figure equals the run's report, per
    /// agent and per phase, and the latency histograms are well formed (cumulative, +Inf equal to the count).
    @Test func thePagesMatchTheRunAcrossAgents() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let agentExporters = [MetricsExporter(), MetricsExporter()]
        let observers = agentExporters.enumerated().map { AgentMetrics(exporter: $1, agentID: "agent\($0)") }
        let coordinator = MetricsExporter()
        var spec = WriteSpec(target: root, files: 120, keep: false)
        spec.stat = true
        let request = RunRequest(runID: "m-\(UUID().uuidString.prefix(8))", write: spec, mode: .threads, workers: 2, seed: 5)
        let outcome = try await LiveAgents.with(count: 2, secret: DistributedTests.secret, policy: AgentPolicy(allowedRoots: [root]),
                                                observers: observers) { addresses in
            try await RemoteAgentLink.with(addresses: addresses) { links in
                try await CoordinatorSession.with(links: links, configuration: DistributedTests.coordinator()) { session throws(LoadgenError) in
                    let agents = try await session.connect()
                    let observer = CoordinatorMetrics(exporter: coordinator)
                    observer.connected(agents)
                    let outcome = try await session.run(request, observer: observer, recorder: nil)
                    observer.runFinished(outcome)
                    return outcome
                }
            }
        }
        let report = outcome.report
        #expect(report.status == .completed)

        let page = try await MetricsServer.with(host: "127.0.0.1", port: 0, exporter: coordinator) { address in
            let response = try Self.get(address.port!)
            #expect(response.status == 200)
            #expect(try Self.get(address.port!, "/other").status == 404)
            #expect(try Self.get(address.port!, "/metrics", method: "POST").status == 405)
            return response.body
        }
        let (types, samples) = try Self.parse(page)
        #expect(types["loadgen_operations_total"] == "counter")
        #expect(types["loadgen_bytes_total"] == "counter")
        #expect(types["loadgen_operation_latency_seconds"] == "histogram")
        #expect(types["loadgen_agents_connected"] == "gauge")
        #expect(types["loadgen_agents_lost_total"] == "counter")
        #expect(types["loadgen_run_status"] == "gauge")
        #expect(types["loadgen_run_phase"] == "gauge")
        let run = ["run": request.runID, "workload": "write", "mode": "threads"]
        #expect(Self.value(samples, "loadgen_agents_connected", [:]) == 2)
        #expect(Self.value(samples, "loadgen_agents_lost_total", ["run": request.runID]) == 0)
        #expect(Self.value(samples, "loadgen_run_status", run.merging(["status": "completed"]) { $1 }) == 1)
        #expect(Self.value(samples, "loadgen_run_status", run.merging(["status": "running"]) { $1 }) == 0)
        for (index, agent) in report.perAgent.enumerated() {
            for (phase, ops) in [("create", agent.ops), ("stat", UInt64(120)), ("remove", agent.cleanup?.ops ?? 0)] {
                let labels = run.merging(["agent": agent.agent, "phase": phase]) { $1 }
                #expect(Self.value(samples, "loadgen_operations_total", labels) == Double(ops), "\(agent.agent) \(phase)")
                #expect(Self.value(samples, "loadgen_operation_latency_seconds_count", labels) == Double(ops))
                #expect(Self.value(samples, "loadgen_operation_latency_seconds_bucket", labels.merging(["le": "+Inf"]) { $1 }) == Double(ops))
                let buckets = samples.filter { $0.name == "loadgen_operation_latency_seconds_bucket" && $0.labels["agent"] == agent.agent && $0.labels["phase"] == phase }
                #expect(buckets.count == MetricsExporter.latencyBuckets.count + 1)
                #expect(zip(buckets, buckets.dropFirst()).allSatisfy { $0.value <= $1.value }, "cumulative")
            }
            #expect(Self.value(samples, "loadgen_bytes_total", run.merging(["agent": agent.agent, "phase": "create"]) { $1 }) == Double(agent.bytes))
            // The agent's own page: its figures only, the same values.
            let (_, own) = try Self.parse(String(decoding: agentExporters[index].page(), as: UTF8.self))
            let labels = run.merging(["agent": agent.agent, "phase": "create"]) { $1 }
            #expect(Self.value(own, "loadgen_operations_total", labels) == Double(agent.ops))
            #expect(Self.value(own, "loadgen_run_status", run.merging(["status": "completed"]) { $1 }) == 1)
            #expect(!own.contains { $0.labels["agent"] != nil && $0.labels["agent"] != agent.agent })
        }
        // The sum is the exact latency sum of the run's create phase (to the nanosecond, as seconds).
        let sums = samples.filter { $0.name == "loadgen_operation_latency_seconds_sum" && $0.labels["phase"] == "create" }.map(\.value)
        #expect(abs(sums.reduce(0, +) - report.latencyUs.mean * Double(report.ops) / 1e6) < 1e-6)
    }

    /// Latencies land in the bucket whose bound is at or above them, with the errors by kind beside them.
    @Test func latenciesFallInTheirBucketsAndErrorsByKind() throws {
        let exporter = MetricsExporter()
        exporter.runStarted(runID: "r1", workload: .fetch, mode: .async)
        var tally = Tally()
        for nanos: UInt64 in [5_000, 5_000, 9_000, 300_000, 2_000_000_000] { tally.recordLatency(nanos) }
        tally.ops = 5
        tally.recordError(.timeout, "slow")
        tally.recordError(.timeout, "slow")
        tally.recordError(.connect, "refused")
        exporter.record(WireMessage.Interval(runID: "r1", phase: .main, seq: 1, elapsedNanos: 1, tally: tally), agent: "a")
        exporter.record(WireMessage.Interval(runID: "other", phase: .main, seq: 1, elapsedNanos: 1, tally: tally), agent: "a")
        let (_, samples) = try Self.parse(String(decoding: exporter.page(), as: UTF8.self))
        let labels = ["run": "r1", "agent": "a", "phase": "fetch"]
        func bucket(_ le: String) -> Double? {
            Self.value(samples, "loadgen_operation_latency_seconds_bucket", labels.merging(["le": le]) { $1 })
        }
        #expect(bucket("0.00001") == 3)
        #expect(bucket("0.00025") == 3)
        #expect(bucket("0.0005") == 4)
        #expect(bucket("1") == 4)
        #expect(bucket("2.5") == 5)
        #expect(bucket("+Inf") == 5)
        #expect(Self.value(samples, "loadgen_errors_total", labels.merging(["kind": "timeout"]) { $1 }) == 2)
        #expect(Self.value(samples, "loadgen_errors_total", labels.merging(["kind": "connect"]) { $1 }) == 1)
        #expect(Self.value(samples, "loadgen_operations_total", labels) == 5, "the other run's interval is not counted")
        // A new run replaces the last one's series.
        exporter.runStarted(runID: "r2", workload: .write, mode: .threads)
        let (_, next) = try Self.parse(String(decoding: exporter.page(), as: UTF8.self))
        #expect(!next.contains { $0.labels["run"] == "r1" })
        #expect(Self.value(next, "loadgen_run_status", ["run": "r2", "status": "running"]) == 1)
    }

    @Test(arguments: [
        (["--metrics-listen", "70000"], "70000"),
        (["--metrics-listen", "host:port"], "host:port"),
    ])
    func badAddressesAreRefused(arguments: [String], words: String) async throws {
        try await TestSupport.expectWriteRefusal(arguments, words: words)
        let agent = try await TestSupport.run(["agent", "--insecure", "--listen", "127.0.0.1:0"] + arguments)
        #expect(agent.status == 64 || agent.status == 2, "\(agent.stderr)")
        #expect(agent.stderr.contains(words))
    }

    /// The command serves the page while it runs and says where.
    @Test func theCommandSaysWhereThePageIs() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let out = try await TestSupport.run(["coordinate", "--target", dir, "--files", "50", "--mode", "threads", "--no-store",
                                             "--metrics-listen", "127.0.0.1:0"])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stderr.contains("loadgen: metrics at http://127.0.0.1:"), "\(out.stderr)")
    }
}
