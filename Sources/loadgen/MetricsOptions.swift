import ArgumentParser
import Foundation
import LoadgenAgent
import LoadgenCore
import LoadgenCoordinator
import LoadgenMetrics
import LoadgenWire

/// `--metrics-listen`: a Prometheus page for the command's runs, off unless asked for.
struct MetricsOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Serve the runs' live figures at http://HOST:PORT/metrics for Prometheus (a bare PORT or :PORT binds 127.0.0.1; nothing is served without this).",
        valueName: "HOST:PORT"))
    var metricsListen: String?

    /// Where to listen: loopback unless a host is named.
    func address() throws(LoadgenError) -> AgentAddress? {
        guard let text = self.metricsListen else { return nil }
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let port = Int(trimmed.hasPrefix(":") ? String(trimmed.dropFirst()) : trimmed) {
            guard (0...65535).contains(port) else {
                throw .usage("--metrics-listen '\(text)' has the port \(port); a port is a number from 0 to 65535.")
            }
            return AgentAddress(host: "127.0.0.1", port: port)
        }
        do {
            return try AgentAddress.parse(trimmed, defaultPort: 9464)
        } catch {
            throw .usage("--metrics-listen '\(text)' is not HOST:PORT or PORT: \(error.message)")
        }
    }

    /// Runs `body` with an exporter whose page is served while `body` runs (nil and nothing served without the option).
    func serve<R: Sendable>(_ body: (MetricsExporter?) async throws -> R) async throws -> R {
        guard let address = try self.address() else { return try await body(nil) }
        let exporter = MetricsExporter()
        return try await MetricsServer.with(host: address.host, port: address.port, exporter: exporter) { bound in
            let shown = AgentAddress(host: bound.ipAddress ?? address.host, port: bound.port ?? address.port)
            FileHandle.standardError.write(Data("loadgen: metrics at http://\(shown)/metrics\n".utf8))
            return try await body(exporter)
        }
    }
}

