import ArgumentParser
import Foundation
import Logging
import LoadgenAgent
import LoadgenCore
import LoadgenMetrics
import LoadgenWire
import NIOCore

/// `loadgen agent`: serve runs for coordinators on this host.
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Serve runs for coordinators on this host, within this agent's own policy.",
        discussion: """
            The agent listens on 127.0.0.1:7420 unless told otherwise. Both sides of a
            connection prove they hold the shared secret (HMAC challenge-response) before
            any command; listening on any address but loopback needs --secret-file, and
            --insecure (no secret) is accepted only on loopback. The agent owns its
            policy: a run outside the allowed roots or over a cap is refused with a
            sentence naming the limit, never clamped.

            It serves one run at a time and stops a run's load within 2 seconds of losing
            its coordinator.

            Fetch runs reach only what the agent allows. Link-local networks
            (169.254.0.0/16, fe80::/10) and cloud metadata addresses are refused unless
            --allow-cidr covers them; --deny-cidr refuses a network always; with any
            --allow-host or --allow-cidr, only those are reached. Every URL is checked as
            this host resolves it before the run is prepared (a refusal names the address
            and the rule), and every connection and redirect again during it (counted as
            policy errors, never connected).

            Connections still in their handshake are capped: 32 in all, 8 from one
            address, and from 16 on new ones are dropped at random, more often as the cap
            nears (sshd's MaxStartups 16:30:32). An address with 5 failed handshakes
            within a second is refused for that second. Each refusal is one sentence to
            the peer. A connection that closes without a word (a health probe) is not a
            failure.

            Examples:
              openssl rand -hex 32 > /etc/loadgen.secret && chmod 600 /etc/loadgen.secret
              loadgen agent --listen 0.0.0.0:7420 --secret-file /etc/loadgen.secret --allow-root /data
              loadgen agent --insecure                     loopback only, for trying things out
              loadgen agent --listen 0.0.0.0:7420 --secret-file s --tls-cert agent.pem --tls-key agent.key --tls-ca ca.pem

            With --tls-cert, --tls-key and --tls-ca the link is mutual TLS: only a
            coordinator whose certificate the CA signed gets in, and coordinators must
            give the same three options (their --tls-ca must have signed this agent's
            certificate, which must name the address coordinators dial in its
            subjectAltName).
            """
    )

    @Option(help: ArgumentHelp("Address to listen on (port 0 picks a free one).", valueName: "HOST:PORT"))
    var listen: String = "127.0.0.1:7420"

    @Option(help: ArgumentHelp("File holding the shared secret (mode 0600).", valueName: "FILE"))
    var secretFile: String?

    @Flag(help: "Accept coordinators without a secret (loopback addresses only).")
    var insecure = false

    @Option(help: ArgumentHelp("A directory write runs may target (repeatable; default: the system temp directory).",
                               valueName: "DIR"))
    var allowRoot: [String] = []

    @Option(help: ArgumentHelp("This agent's id in runs and run directories (default: the host name, and -PORT on a port other than 7420).", valueName: "NAME"))
    var id: String?

    @Option(help: ArgumentHelp("Most files a run may create here.", valueName: "N"))
    var maxFiles: Int = 10_000_000

    @Option(help: ArgumentHelp("Most bytes a run may write here (k/m/g/t suffixes).", valueName: "BYTES"))
    var maxBytes: String = "64g"

    @Option(help: ArgumentHelp("Most workers a run may use here.", valueName: "N"))
    var maxWorkers: Int = 1024

    @Option(help: ArgumentHelp("Longest run allowed here.", valueName: "DURATION"))
    var maxDuration: String = "1h"

    @Option(help: ArgumentHelp("Most requests per second a fetch run may ask for here.", valueName: "R"))
    var maxRate: Double = 1_000_000

    @Flag(help: "Refuse async write runs here instead of using io_uring.")
    var noIoUring = false

    @OptionGroup(title: "Fetch destinations (checked after DNS, on every connection and redirect)")
    var destinations: DestinationOptions

    @OptionGroup(title: "Mutual TLS (encrypts the link; the secret is still proved inside it)")
    var tls: TLSOptions

    @OptionGroup(title: "Prometheus")
    var metrics: MetricsOptions

    struct Settings {
        var address: AgentAddress
        var prover: SharedSecret?
        var policy: AgentPolicy
        var agentID: String
        var tls: ControlTLS?
    }

    func settings() throws(LoadgenError) -> Settings {
        let address = try AgentAddress.parse(self.listen)
        if self.insecure, self.secretFile != nil {
            throw .usage("Give --secret-file or --insecure, not both.")
        }
        if self.insecure, !address.isLoopback {
            throw .usage("--insecure is accepted only on a loopback address; \(address) is not one. Give --secret-file instead.")
        }
        if self.secretFile == nil, !self.insecure {
            throw .usage(address.isLoopback
                ? "Give --secret-file FILE, or --insecure to accept coordinators without a secret on \(address)."
                : "Listening on \(address) needs --secret-file: without it anyone who can reach the port could run load here.")
        }
        let prover = try self.secretFile.map { path throws(LoadgenError) in try SharedSecret.load(path: path, credentialsDirectory: HostEnvironment.credentialsDirectory) }
        guard self.maxFiles >= 1 else { throw .usage("--max-files must be at least 1; got \(self.maxFiles).") }
        guard self.maxWorkers >= 1 else { throw .usage("--max-workers must be at least 1; got \(self.maxWorkers).") }
        guard let maxBytes = ByteCount.parse(self.maxBytes) else {
            throw .usage("--max-bytes '\(self.maxBytes)' is not a byte count such as 64g.")
        }
        guard let maxDuration = DurationText.parseNanos(self.maxDuration), maxDuration > 0 else {
            throw .usage("--max-duration '\(self.maxDuration)' is not a duration such as 1h or 30m.")
        }
        guard self.maxRate > 0 else { throw .usage("--max-rate must be above 0; got \(self.maxRate).") }
        var roots: [String] = []
        for root in self.allowRoot.isEmpty ? [NSTemporaryDirectory()] : self.allowRoot {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw .usage("The allowed root '\(root)' is not a directory.")
            }
            roots.append(URL(fileURLWithPath: root).resolvingSymlinksInPath().path)
        }
        _ = try self.metrics.address()
        let agentID = self.id ?? HostEnvironment.hostName
        guard !agentID.isEmpty, agentID.count <= 64,
              agentID.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) })
        else {
            throw .usage("The agent id '\(agentID)' must be 1 to 64 letters, digits, '-', '_' or '.'.")
        }
        return Settings(address: address, prover: prover,
                        policy: AgentPolicy(allowedRoots: roots, maxFiles: self.maxFiles, maxBytes: maxBytes,
                                            maxWorkers: self.maxWorkers, maxDurationNanos: maxDuration, maxRate: self.maxRate,
                                            destinations: try self.destinations.policy()),
                        agentID: agentID, tls: try self.tls.load(server: true))
    }

    func validate() throws {
        do {
            _ = try self.settings()
        } catch {
            throw ValidationError(error.message)
        }
    }

    func run() async throws {
        let settings = try self.settings()
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        var logger = Logger(label: "loadgen.agent")
        logger.logLevel = .info
        try await self.metrics.serve { exporter in
            var configuration = AgentConfiguration(
                agentID: settings.agentID, host: HostEnvironment.hostName, cores: HostEnvironment.cores,
                loadgenVersion: Loadgen.version, policy: settings.policy, prover: settings.prover,
                workerExecutable: HostEnvironment.executablePath,
                ioUringDisabled: self.noIoUring ? "the agent was started with --no-io-uring." : nil)
            let metrics = exporter.map { AgentMetrics(exporter: $0, agentID: settings.agentID) }
            configuration.runObserver = metrics
            var configured = AgentServer(configuration: configuration, host: settings.address.host, port: settings.address.port,
                                         logger: logger)
            configured.tls = settings.tls
            configured.idIncludesPort = self.id == nil
            let server = configured
            let signals = HostEnvironment.terminations()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        try await server.run { address, agentID in
                            metrics?.id.withLock { $0 = agentID }
                            let line = "loadgen agent \(agentID) listening on \(address.ipAddress ?? settings.address.host):\(address.port ?? 0)\n"
                            FileHandle.standardOutput.write(Data(line.utf8))
                        }
                    } catch let error as IOError {
                        throw LoadgenError(.usage, "The agent cannot listen on \(settings.address): \(error.description).")
                    }
                }
                group.addTask {
                    for await _ in signals { return }
                }
                try await group.next()
                group.cancelAll()
            }
        }
        logger.info("Agent stopped")
    }
}
