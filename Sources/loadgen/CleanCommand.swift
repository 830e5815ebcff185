import ArgumentParser
import Foundation
import LoadgenAgent
import LoadgenCoordinator
import LoadgenCore
import LoadgenWire
import LoadgenWorkloads

/// `loadgen clean`: removes what killed runs left under a target, here or on the agents, and nothing else.
struct CleanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clean",
        abstract: "Remove the run directories killed runs left behind under a target.",
        discussion: """
            Every write run works in <target>/loadgen-<run>-<agent>, which holds a
            marker (.loadgen-run, a link naming the run) and which the run keeps
            locked (flock) while it lives. A killed run leaves its directory
            behind; clean removes such directories and nothing else:
              - a directory a live run holds (in any process, or on any host
                sharing the file system) stays;
              - a run kept with --keep stays unless --kept is given;
              - a directory without the marker stays, even one named like a run's.

            Examples:
              loadgen clean --target /tmp --dry-run     list what would go
              loadgen clean --target /tmp               remove it, with counts
              loadgen clean --target /data --agents a:7420,b:7420 --secret-file s
                                                        the same on each agent,
                                                        within its --allow-root

            Exit status: 0 when everything that should go went; 1 when something
            could not be removed or an agent could not clean; 2 when the request
            was refused (a missing target, one outside an agent's roots).
            """
    )

    @Option(help: ArgumentHelp("The directory whose leftover run directories go (the --target the runs were given).",
                               valueName: "DIR"))
    var target: String

    @Flag(help: "Remove runs kept with --keep too.")
    var kept = false

    @Flag(help: "List what would be removed; remove nothing.")
    var dryRun = false

    @Flag(help: "One JSON array of reports (one per host) on stdout.")
    var json = false

    @OptionGroup(title: "Agents")
    var agents: AgentOptions

    func validate() throws {
        guard !self.target.isEmpty else { throw ValidationError("--target is empty: give the directory the runs wrote under.") }
        if self.target.hasPrefix("http://") || self.target.hasPrefix("https://") {
            throw ValidationError("--target '\(self.target)' is a URL: fetch runs leave nothing on disk; give the directory write runs used.")
        }
        do {
            _ = try self.agents.secret()
            _ = try self.agents.tlsSettings()
            if self.agents.isRemote { _ = try self.agents.addresses() }
        } catch {
            throw error.asValidation
        }
    }

    func run() async throws {
        // One per host: an agent's, or (nil) this host's.
        var reports: [(agent: ConnectedAgent?, result: Result<CleanReport, LoadgenError>)] = []
        if self.agents.isRemote {
            let addresses = try self.agents.addresses()
            let configuration = CoordinatorConfiguration(loadgenVersion: Loadgen.version, host: HostEnvironment.hostName,
                                                         prover: try self.agents.secret())
            let request = WireMessage.Clean(target: self.target, includeKept: self.kept, dryRun: self.dryRun)
            let results = try await RemoteAgentLink.with(addresses: addresses, tls: try self.agents.tlsSettings()) { links in
                try await CoordinatorSession.with(links: links, configuration: configuration,
                                                  interrupts: HostEnvironment.interrupts()) { session throws(LoadgenError) in
                    _ = try await session.connect()
                    return try await session.clean(request)
                }
            }
            reports = results.map { ($0.agent, $0.result) }
            // One refusal for everyone (the same bad target everywhere) is the request's fault: say it once, exit 2.
            let refusals = results.compactMap { result -> LoadgenError? in
                if case .failure(let error) = result.result, error.isRefusal { return error }
                return nil
            }
            if refusals.count == results.count, let first = refusals.first { throw first }
        } else {
            // Here, as the user: the file system's permissions are the only bound.
            let report = try RunCleaner.clean(target: self.target, allowedRoots: nil, includeKept: self.kept, dryRun: self.dryRun)
            reports = [(nil, .success(report))]
        }
        if self.json {
            let encoder = FrameCodec.makeEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
            struct HostReport: Encodable {
                var host: String
                /// The agent's id and address (absent for a clean on this host).
                var agentID: String?
                var address: String?
                var report: CleanReport?
                var error: String?
            }
            let rows = reports.map { entry in
                var row = HostReport(host: entry.agent?.host ?? HostEnvironment.hostName, agentID: entry.agent?.agentID,
                                     address: entry.agent?.address)
                switch entry.result {
                case .success(let report): row.report = report
                case .failure(let error): row.error = error.message
                }
                return row
            }
            FileHandle.standardOutput.write(try encoder.encode(rows) + Data("\n".utf8))
        } else {
            for entry in reports {
                // Reports from agents say whose they are; a clean here needs no name.
                print(Self.render(entry.result, host: entry.agent.map { "agent \($0.agentID) (\($0.address))" }))
            }
        }
        let failed = reports.contains { entry in
            switch entry.result {
            case .success(let report): !report.failures.isEmpty
            case .failure: true
            }
        }
        if failed { throw ExitCode(1) }
    }

    /// What one host's clean did, for people.
    static func render(_ result: Result<CleanReport, LoadgenError>, host: String?) -> String {
        let on = host.map { " on \($0)" } ?? ""
        let report: CleanReport
        switch result {
        case .failure(let error): return "Nothing cleaned\(on): \(error.message)"
        case .success(let r): report = r
        }
        var lines: [String] = []
        let verb = report.dryRun ? "Would remove" : "Removed"
        if report.removed.isEmpty {
            lines.append("\(report.dryRun ? "Nothing to remove" : "Nothing removed") under \(report.target)\(on): no run directory was left by a killed run.")
        } else {
            let count = report.removed.count
            lines.append("\(verb) \(count) run director\(count == 1 ? "y" : "ies") under \(report.target)\(on): "
                + "\(Self.plural(report.directories, "directory", "directories")), \(Self.plural(report.files, "file", "files")), "
                + "\(ByteCount.format(report.bytes)).")
            let rows = report.removed.map { entry in
                ["  " + entry.path, "run \(entry.runID)", Self.plural(entry.files, "file", "files"), ByteCount.format(entry.bytes)]
            }
            lines.append(Format.table(rows, rightAligned: [2, 3]))
        }
        let left = report.inUse.map { "  \($0)  in use by a live run" }
            + report.kept.map { "  \($0)  kept with --keep (give --kept to remove it)" }
            + report.unmarked.map { "  \($0)  has no run marker: not loadgen's, left alone" }
        if !left.isEmpty {
            lines.append("Left in place:")
            lines += left
        }
        if !report.failures.isEmpty {
            lines.append("Could not remove:")
            lines += report.failures.map { "  " + $0 }
        }
        return lines.joined(separator: "\n")
    }

    static func plural(_ count: UInt64, _ one: String, _ many: String) -> String {
        "\(Format.count(count)) \(count == 1 ? one : many)"
    }
}
