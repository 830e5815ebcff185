import Foundation
import Testing
@testable import LoadgenAgent
@testable import LoadgenCoordinator
@testable import LoadgenCore
@testable import LoadgenWorkloads

/// Where an agent's fetch runs may connect: the rules, the check before a run, and the check on every connection
/// and redirect during it (in every mode), with a listener that must see nothing it should not.
@Suite(.timeLimit(.minutes(1)))
struct DestinationPolicyTests {
    static func v(_ text: String) -> [UInt8] { CIDR.parseAddress(text)! }

    @Test func networksParseAndContain() {
        #expect(CIDR("10.0.0.0/8")?.contains(Self.v("10.200.1.1")) == true)
        #expect(CIDR("10.0.0.0/8")?.contains(Self.v("11.0.0.1")) == false)
        #expect(CIDR("10.1.2.3/8")?.description == "10.0.0.0/8", "host bits are cleared")
        #expect(CIDR("192.168.1.7")?.description == "192.168.1.7/32")
        #expect(CIDR("fe80::/10")?.contains(Self.v("fe80::1")) == true)
        #expect(CIDR("fe80::/10")?.contains(Self.v("fec0::1")) == false)
        #expect(CIDR("[fd00::1]")?.prefix == 128)
        // An IPv4-mapped IPv6 address is its IPv4 address.
        #expect(CIDR("169.254.0.0/16")?.contains(Self.v("::ffff:169.254.169.254")) == true)
        for bad in ["10.0.0.0/33", "10.0.0/8", "example.com", "", "10.0.0.0/", "10.0.0.0/-1", "::/129", "1.2.3.4/8x"] {
            #expect(CIDR(bad) == nil, "\(bad)")
        }
    }

    @Test func metadataAndLinkLocalAreRefusedUnlessOpened() {
        let open = DestinationPolicy()
        let metadata = open.refusal(host: "metadata.google.internal", address: Self.v("169.254.169.254"))
        #expect(metadata == "metadata.google.internal (169.254.169.254) is in 169.254.0.0/16, refused by default (link-local and cloud metadata addresses); the agent's --allow-cidr 169.254.169.254/32 opens it.")
        #expect(open.refusal(host: "fe80::1", address: Self.v("fe80::1"))?.contains("fe80::/10") == true)
        #expect(open.refusal(host: "x", address: Self.v("100.100.100.200")) != nil)
        #expect(open.refusal(host: "x", address: Self.v("fd00:ec2::254")) != nil)
        #expect(open.refusal(host: "example.com", address: Self.v("93.184.216.34")) == nil)
        #expect(open.refusal(host: "localhost", address: Self.v("127.0.0.1")) == nil)
        let opened = DestinationPolicy(allowCIDRs: [CIDR("169.254.169.254/32")!])
        #expect(opened.refusal(host: "m", address: Self.v("169.254.169.254")) == nil)
        #expect(opened.refusal(host: "m", address: Self.v("169.254.1.1")) != nil, "only what the CIDR covers is opened")
    }

    @Test func denyWinsAndAnAllowListAllowsOnlyItself() {
        let policy = DestinationPolicy(allowHosts: ["api.internal", "*.lab.example"], allowCIDRs: [CIDR("10.0.0.0/8")!],
                                       denyCIDRs: [CIDR("10.9.0.0/16")!])
        #expect(policy.refusal(host: "api.internal", address: Self.v("192.0.2.1")) == nil)
        #expect(policy.refusal(host: "API.Internal.", address: Self.v("192.0.2.1")) == nil, "names compare without case or a final dot")
        #expect(policy.refusal(host: "a.b.lab.example", address: Self.v("192.0.2.2")) == nil)
        #expect(policy.refusal(host: "lab.example", address: Self.v("192.0.2.2")) != nil, "*.suffix is the names under it")
        #expect(policy.refusal(host: "evil-lab.example", address: Self.v("192.0.2.2")) != nil)
        #expect(policy.refusal(host: "anything", address: Self.v("10.1.2.3")) == nil)
        #expect(policy.refusal(host: "api.internal", address: Self.v("10.9.1.1")) == "api.internal (10.9.1.1) is in --deny-cidr 10.9.0.0/16.")
        let other = policy.refusal(host: "example.com", address: Self.v("93.184.216.34"))
        #expect(other?.contains("allowed by neither the agent's --allow-host (api.internal, *.lab.example) nor its --allow-cidr (10.0.0.0/8)") == true,
                "\(String(describing: other))")
        #expect(DestinationPolicy.problem(withHostPattern: "*.ok.example") == nil)
        for bad in ["", "*.", "a*b", "has space", "*.*.x", ".lead"] {
            #expect(DestinationPolicy.problem(withHostPattern: bad) != nil, "\(bad)")
        }
    }

    @Test func thePolicyTravelsInReadyAndWork() throws {
        let policy = DestinationPolicy(allowHosts: ["a"], allowCIDRs: [CIDR("10.0.0.0/8")!], denyCIDRs: [CIDR("fd00::/8")!])
        let ready = WireMessage.ready(.init(policy: AgentPolicy(allowedRoots: ["/"], destinations: policy).summary))
        let text = String(decoding: try FrameCodec.makeEncoder().encode(ready), as: UTF8.self)
        #expect(text.contains(#""destinations":{"allow_cidrs":["10.0.0.0/8"],"allow_hosts":["a"],"deny_cidrs":["fd00::/8"]}"#), "\(text)")
        #expect(try FrameCodec.decodeBody(Array(text.utf8)) == ready)
    }

    @Test func everyURLIsCheckedBeforeTheRunNamingItsAddress() {
        let spec = FetchSpec(urls: ["http://fine.example/", "http://sneaky.example/x"], repeatCount: 1)
        let resolve: (String) -> [[UInt8]]? = { host in
            host == "sneaky.example" ? [Self.v("10.0.0.1"), Self.v("169.254.169.254")] : [Self.v("192.0.2.10")]
        }
        do {
            try DestinationCheck.check(spec, policy: DestinationPolicy(), agentID: "a1", resolve: resolve)
            Issue.record("a URL resolving to the metadata address was allowed")
        } catch {
            #expect(error.code == .policy)
            #expect(error.message.hasPrefix("Agent a1 does not fetch http://sneaky.example/x: sneaky.example (169.254.169.254) is in 169.254.0.0/16"),
                    "\(error.message)")
        }
        #expect(throws: Never.self) {
            try DestinationCheck.check(spec, policy: DestinationPolicy(allowCIDRs: [CIDR("0.0.0.0/0")!]), agentID: "a1", resolve: resolve)
        }
    }

    /// A redirect to a denied address is a policy error on every request, in every mode, and never connected.
    @Test(arguments: [ExecutionMode.threads, .processes, .async])
    func aRedirectToADeniedAddressIsNeverFollowed(mode: ExecutionMode) async throws {
        try await TestHTTPServer.with { server in
            let request = FetchWorkloadTests.request([server.url("/goto/127.0.0.2")], mode: mode, workers: 2, requests: 6)
            let policy = DestinationPolicy(denyCIDRs: [CIDR("127.0.0.2/32")!])
            let messages = await RunHarness.perform(request, phases: [.main], destinations: policy)
            let done = try #require(RunHarness.done(messages), "\(messages)")
            #expect(done.errors == 6)
            let tally = try RunHarness.tally(messages)
            #expect(tally.errors[.policy] == 6, "\(tally.errors)")
            #expect(server.requests == 6, "only the first hops reached the server")
        }
    }

    /// Through a live agent: a denied network is refused before anything connects (the listener sees nothing),
    /// and the metadata address is refused by default, each naming the address and the rule.
    @Test func anAgentRefusesADeniedRunBeforeConnecting() async throws {
        try await TestHTTPServer.with { server in
            let policy = AgentPolicy(allowedRoots: nil, destinations: DestinationPolicy(denyCIDRs: [CIDR("127.0.0.0/8")!]))
            try await LiveAgents.with(count: 1, secret: DistributedTests.secret, policy: policy) { addresses in
                try await RemoteAgentLink.with(addresses: addresses) { links in
                    try await CoordinatorSession.with(links: links, configuration: DistributedTests.coordinator()) { session throws(LoadgenError) in
                        let agents = try await session.connect()
                        #expect(agents[0].policy.destinations?.denyCIDRs.map(\.description) == ["127.0.0.0/8"])
                        for (url, words) in [(server.url(), "127.0.0.1 is in --deny-cidr 127.0.0.0/8."),
                                             ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is in 169.254.0.0/16, refused by default")] {
                            let request = FetchWorkloadTests.request([url], mode: .threads, workers: 1, requests: 3)
                            do throws(LoadgenError) {
                                _ = try await session.run(request, observer: NullObserver(), recorder: nil)
                                Issue.record("\(url) was fetched")
                            } catch {
                                #expect(error.code == .policy)
                                #expect(error.message.contains(words), "\(error.message)")
                            }
                        }
                    }
                }
            }
            #expect(server.requests == 0, "the denied listener saw a request")
        }
    }

    @Test func theCommandsNameABadNetworkAndKeepTheRulesWhereTheyApply() async throws {
        let agent = try await TestSupport.run(["agent", "--insecure", "--allow-cidr", "10.0.0.0/40"], timeout: 10)
        #expect(agent.status == 2)
        #expect(agent.stderr.contains("--allow-cidr '10.0.0.0/40' is not a network"), "\(agent.stderr)")
        let host = try await TestSupport.run(["agent", "--insecure", "--allow-host", "a*b"], timeout: 10)
        #expect(host.status == 2)
        #expect(host.stderr.contains("--allow-host 'a*b'"), "\(host.stderr)")
        let remote = try await TestSupport.run(["coordinate", "--target", "http://127.0.0.1:9/", "--agents", "127.0.0.1:9",
                                                "--allow-cidr", "169.254.169.254/32"], timeout: 10)
        #expect(remote.status == 2)
        #expect(remote.stderr.contains("are for the embedded agent"), "\(remote.stderr)")
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let metadata = try await TestSupport.run(["coordinate", "--target", "http://169.254.169.254/", "--requests", "1", "--mode", "threads"],
                                                 environment: ["LOADGEN_DB": dir + "/db.sqlite"], timeout: 20)
        #expect(metadata.status == 2)
        #expect(metadata.stderr.contains("169.254.169.254 is in 169.254.0.0/16, refused by default"), "\(metadata.stderr)")
    }
}
