import ArgumentParser
import LoadgenCore

/// Where an agent's fetch runs may connect: `--allow-host`, `--allow-cidr`, `--deny-cidr`.
struct DestinationOptions: ParsableArguments {
    @Option(help: ArgumentHelp("A host fetch runs may reach: a name, or *.suffix for every name under it (repeatable). With any --allow-host or --allow-cidr, nothing else is reached.", valueName: "NAME"))
    var allowHost: [String] = []

    @Option(help: ArgumentHelp("A network fetch runs may reach, as ADDRESS/BITS (repeatable); it also opens the link-local and cloud metadata addresses it covers, refused otherwise.", valueName: "CIDR"))
    var allowCidr: [String] = []

    @Option(help: ArgumentHelp("A network fetch runs never reach (repeatable; wins over every allow).", valueName: "CIDR"))
    var denyCidr: [String] = []

    var isGiven: Bool { !self.allowHost.isEmpty || !self.allowCidr.isEmpty || !self.denyCidr.isEmpty }

    func policy() throws(LoadgenError) -> DestinationPolicy {
        for pattern in self.allowHost {
            if let problem = DestinationPolicy.problem(withHostPattern: pattern) { throw .usage(problem) }
        }
        func parse(_ texts: [String], flag: String) throws(LoadgenError) -> [CIDR] {
            try texts.map { text throws(LoadgenError) in
                guard let cidr = CIDR(text) else {
                    throw .usage("\(flag) '\(text)' is not a network: give ADDRESS/BITS, such as 10.0.0.0/8 or fd00::/8 (a bare address means that one address).")
                }
                return cidr
            }
        }
        return DestinationPolicy(allowHosts: self.allowHost, allowCIDRs: try parse(self.allowCidr, flag: "--allow-cidr"),
                                 denyCIDRs: try parse(self.denyCidr, flag: "--deny-cidr"))
    }
}
