import ArgumentParser
import LoadgenCore
import LoadgenWire

/// Mutual TLS for the coordinator–agent link: the same three options on both sides.
struct TLSOptions: ParsableArguments {
    @Option(help: ArgumentHelp("This side's certificate (PEM) for mutual TLS with agents or coordinators; needs --tls-key and --tls-ca.",
                               valueName: "FILE"))
    var tlsCert: String?

    @Option(help: ArgumentHelp("The private key (PEM) of --tls-cert.", valueName: "FILE"))
    var tlsKey: String?

    @Option(help: ArgumentHelp("The CA (PEM) that must have signed the other side's certificate.", valueName: "FILE"))
    var tlsCa: String?

    var isGiven: Bool { self.tlsCert != nil || self.tlsKey != nil || self.tlsCa != nil }

    /// The TLS settings, nil when none of the options is given; all three or none.
    func load(server: Bool) throws(LoadgenError) -> ControlTLS? {
        guard self.isGiven else { return nil }
        guard let cert = self.tlsCert, let key = self.tlsKey, let ca = self.tlsCa else {
            let missing = [("--tls-cert", self.tlsCert), ("--tls-key", self.tlsKey), ("--tls-ca", self.tlsCa)]
                .filter { $0.1 == nil }.map(\.0)
            throw .usage("Mutual TLS needs --tls-cert, --tls-key and --tls-ca together; \(missing.joined(separator: " and ")) \(missing.count == 1 ? "is" : "are") missing.")
        }
        return try ControlTLS.load(certificate: cert, key: key, ca: ca, server: server)
    }
}
