import Foundation
import Glibc
import Testing
@testable import LoadgenAgent
@testable import LoadgenCoordinator
@testable import LoadgenCore

/// Run requests sent straight over the wire, bypassing the coordinator's own checks (an agent trusts no
/// coordinator): each is refused with a sentence naming the field, and nothing is written.
@Suite(.timeLimit(.minutes(1)))
struct HostileRequestTests {
    /// A coordinator made of a socket: it speaks frames by hand.
    final class RawCoordinator {
        let fd: Int32
        var decoder = FrameDecoder()

        init(port: Int) {
            self.fd = DistributedTests.rawConnect(port: port)
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(self.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }

        deinit { close(self.fd) }

        func send(body: String) {
            let bytes = Array(body.utf8)
            let length = UInt32(bytes.count)
            let frame = [UInt8(length >> 24), UInt8((length >> 16) & 0xff), UInt8((length >> 8) & 0xff), UInt8(length & 0xff)] + bytes
            _ = frame.withUnsafeBytes { Glibc.write(self.fd, $0.baseAddress, $0.count) }
        }

        func send(_ message: WireMessage) {
            let frame = try! FrameCodec.encode(message)
            _ = frame.withUnsafeBytes { Glibc.write(self.fd, $0.baseAddress, $0.count) }
        }

        /// The next message that is not a heartbeat, or nil when the agent closed or went quiet.
        func next() -> WireMessage? {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                if let message = try? self.decoder.nextMessage() {
                    if case .heartbeat = message { continue }
                    return message
                }
                let n = buffer.withUnsafeMutableBytes { read(self.fd, $0.baseAddress, $0.count) }
                guard n > 0 else { return nil }
                buffer.withUnsafeBytes { self.decoder.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            }
        }

        /// hello, welcome, auth, ready, against an agent without a secret.
        func handshake() -> Bool {
            self.send(.hello(.init(loadgenVersion: "test", coordinatorHost: "raw", nonce: Handshake.makeNonce())))
            guard case .welcome? = self.next() else { return false }
            self.send(.auth(.init(proof: nil)))
            guard case .ready? = self.next() else { return false }
            return true
        }
    }

    static func write(_ root: String, _ change: String = "", top: String = "") -> String {
        #"{"type":"prepare","request":{"run_id":"h1","workload":"write","mode":"threads","workers":2,"seed":1,"interval_nanos":1000000000\#(top),"write":{"target":"\#(root)","files":10,"size":{"lower_bytes":2,"upper_bytes":2},"dirs":1,"fsync":"none","keep":false\#(change)}}}"#
    }

    static func fetch(_ change: String = "", urls: String = #"["http://127.0.0.1:9/"]"#) -> String {
        #"{"type":"prepare","request":{"run_id":"h2","workload":"fetch","mode":"threads","workers":2,"seed":1,"interval_nanos":1000000000,"fetch":{"urls":\#(urls),"repeat_count":1,"timeout_nanos":1000000000,"method":"GET","insecure_tls":false\#(change)}}}"#
    }

    /// Replaces one `"key":value` of a JSON text (the first).
    static func with(_ json: String, _ key: String, _ value: String) -> String {
        guard let range = json.range(of: #""\#(key)":"#) else { return json }
        let rest = json[range.upperBound...]
        let end = rest.firstIndex { $0 == "," || $0 == "}" }!
        return json.replacingCharacters(in: range.upperBound..<end, with: value)
    }

    @Test func twentyEightHostileRequestsAreEachRefusedNamingTheField() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        let outside = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root); TestSupport.remove(outside) }
        let w = Self.write(root)
        let f = Self.fetch()
        let cases: [(String, String)] = [
            (Self.with(w, "workers", "0"), "--workers must be at least 1"),
            (Self.with(w, "workers", "-1"), "--workers must be at least 1; got -1"),
            (Self.with(w, "workers", "100000"), "--workers 100000 is more than loadgen's limit"),
            (Self.with(w, "workers", "9"), "at most 8 workers per run (--max-workers)"),
            (Self.with(w, "workers", #""two""#), "a field of the wrong type at 'request.workers'"),
            (Self.with(w, "files", "0"), "--files must be at least 1"),
            (Self.with(w, "files", "-5"), "--files must be at least 1; got -5"),
            (Self.with(w, "files", "5000"), "at most 1000 files per run (--max-files)"),
            (Self.with(w, "files", "1000000000000"), "is more than loadgen's limit"),
            (Self.with(w, "files", #""10""#), "'request.write.files'"),
            (Self.with(w, "lower_bytes", "9"), "The size"),
            (Self.with(Self.with(w, "lower_bytes", "0"), "upper_bytes", "4611686018427387904"), "outside 0 to 1 TiB"),
            (Self.with(w, "dirs", "0"), "--dirs must be at least 1"),
            (Self.with(w, "interval_nanos", "1"), "The report interval must be between 100ms and 60s"),
            (Self.with(w, "run_id", #""../../etc""#), "The run id '../../etc'"),
            (Self.with(w, "mode", #""forkbomb""#), "at 'request.mode': Cannot initialize ExecutionMode from invalid String value forkbomb"),
            (Self.with(w, "target", #""\#(outside)""#), "outside this agent's allowed roots"),
            (Self.with(w, "target", #""\#(root)/../../../etc""#), "outside this agent's allowed roots"),
            (Self.write(root, top: #","shell":"rm -rf /""#), "the unknown field 'request.shell'"),
            (Self.write(root, #","owner":"root""#), "the unknown field 'request.write.owner'"),
            (Self.fetch(urls: "[]"), "The URL list is empty"),
            (Self.fetch(urls: #"["file:///etc/passwd"]"#), "file:///etc/passwd"),
            (Self.fetch(urls: #"["gopher://127.0.0.1/"]"#), "gopher://127.0.0.1/"),
            (Self.fetch(#","rate":-5"#), "--rate must be a number of requests per second above 0"),
            (Self.fetch(#","rate":5000"#), "at most 1000 requests per second (--max-rate)"),
            (Self.fetch(#","duration_nanos":0"#), "--duration must be longer than zero"),
            (Self.fetch(#","duration_nanos":36000000000000"#), "(--max-duration)"),
            (Self.with(f, "repeat_count", "0"), "--repeat must be at least 1"),
        ]
        let policy = AgentPolicy(allowedRoots: [root], maxFiles: 1000, maxWorkers: 8, maxDurationNanos: 60_000_000_000, maxRate: 1000)
        try await LiveAgents.with(count: 1, policy: policy) { addresses in
            for (body, words) in cases {
                let raw = RawCoordinator(port: addresses[0].port)
                #expect(raw.handshake(), "no handshake for \(body)")
                raw.send(body: body)
                switch raw.next() {
                case .refused(let refused)?:
                    #expect(refused.message.contains(words), "\(words) ← \(refused.message)")
                case .failure(let failure)?:
                    #expect(failure.message.contains(words), "\(words) ← \(failure.message)")
                case let other:
                    Issue.record("\(body) was answered \(String(describing: other))")
                }
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).isEmpty, "a refused request wrote something")
    }

    /// Every file, directory and link under `path` with its content, mode and link target, as one digest.
    static func treeDigest(_ path: String) -> String {
        var lines: [String] = []
        let manager = FileManager.default
        for item in (manager.subpaths(atPath: path) ?? []).sorted() {
            let full = path + "/" + item
            var info = stat()
            guard lstat(full, &info) == 0 else { continue }
            var line = "\(item) \(info.st_mode) \(info.st_size)"
            if (info.st_mode & S_IFMT) == S_IFLNK {
                line += " -> " + ((try? manager.destinationOfSymbolicLink(atPath: full)) ?? "?")
            } else if (info.st_mode & S_IFMT) == S_IFREG {
                line += " " + String(decoding: (manager.contents(atPath: full) ?? Data()).prefix(4096), as: UTF8.self)
            }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }

    /// Write targets that try to leave the agent's allowed root: each is refused, the whole tree outside the root
    /// is exactly as it was, and nothing was made inside it.
    @Test func hostileTargetsLeaveEverythingOutsideTheRootUntouched() async throws {
        let base = try TestSupport.makeTemporaryDirectory("lghostile")
        defer { TestSupport.remove(base) }
        let root = base + "/root"
        let outside = base + "/outside"
        let manager = FileManager.default
        try manager.createDirectory(atPath: root, withIntermediateDirectories: true)
        try manager.createDirectory(atPath: outside + "/deep/er", withIntermediateDirectories: true)
        try Data("secret".utf8).write(to: URL(fileURLWithPath: outside + "/deep/er/file"))
        try Data("x".utf8).write(to: URL(fileURLWithPath: root + "/plainfile"))
        try manager.createSymbolicLink(atPath: root + "/escape", withDestinationPath: outside)
        try manager.createSymbolicLink(atPath: root + "/escapefile", withDestinationPath: outside + "/deep/er/file")
        try manager.createSymbolicLink(atPath: root + "/dangling", withDestinationPath: base + "/nothing-here")
        try manager.createSymbolicLink(atPath: root + "/up", withDestinationPath: "..")
        let before = Self.treeDigest(base)
        let targets = [
            outside, root + "/../outside", root + "/./../outside/deep", root + "/escape", root + "/escape/deep/er",
            root + "/escapefile", root + "/dangling", root + "/up", root + "/up/outside", root + "/plainfile",
            root + "/nonexistent", "/", "/etc", "/proc/self/cwd", "/dev/shm/../etc", "relative/dir", "~", "",
            root + "/\n/../..",
        ]
        let policy = AgentPolicy(allowedRoots: [root])
        try await LiveAgents.with(count: 1, policy: policy) { addresses in
            for (index, target) in targets.enumerated() {
                let raw = RawCoordinator(port: addresses[0].port)
                #expect(raw.handshake())
                let request = RunRequest(runID: "t\(index)", write: WriteSpec(target: target, files: 3),
                                         mode: .threads, workers: 1, seed: 1)
                raw.send(.prepare(.init(request: request)))
                guard case .refused(let refused)? = raw.next() else {
                    Issue.record("the target '\(target)' was not refused")
                    continue
                }
                #expect(refused.code == .policy || refused.code == .usage, "\(target): \(refused)")
                #expect(!refused.message.isEmpty)
            }
        }
        #expect(Self.treeDigest(base) == before, "something outside the root (or in it) changed")
    }

    /// Faults on the agent's side: a full disk is counted and the run fails with what it did; a read-only target
    /// is refused at the probe; the agent then serves the next run. (Needs root for the mounts; CI runs as root.)
    @Test func aFullDiskAndAReadOnlyTargetAreSurvivedAndTheNextRunIsServed() async throws {
        guard getuid() == 0 else {
            Issue.record("this test mounts tmpfs file systems and needs root (CI runs as root)")
            return
        }
        let base = try TestSupport.makeTemporaryDirectory("lgfaults")
        let full = base + "/full"
        let readOnly = base + "/ro"
        let fine = base + "/fine"
        for dir in [full, readOnly, fine] { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        func mount(_ options: String, _ dir: String) throws {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/mount")
            process.arguments = ["-t", "tmpfs", "-o", options, "tmpfs", dir]
            try process.run()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "mount \(options) \(dir)")
        }
        func unmount(_ dir: String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/umount")
            process.arguments = ["-l", dir]
            try? process.run()
            process.waitUntilExit()
        }
        try mount("size=64k,nr_inodes=400", full)
        try mount("ro,size=64k", readOnly)
        defer {
            unmount(full)
            unmount(readOnly)
            TestSupport.remove(base)
        }
        try await LiveAgents.with(count: 1, secret: DistributedTests.secret, policy: AgentPolicy(allowedRoots: [base])) { addresses in
            try await RemoteAgentLink.with(addresses: addresses) { links in
                try await CoordinatorSession.with(links: links, configuration: DistributedTests.coordinator()) { session throws(LoadgenError) in
                    _ = try await session.connect()
                    // 2,000 files of 1 KiB into 64 KiB and 400 inodes: the disk fills, each failure is counted.
                    let filling = RunRequest(runID: "full1", write: WriteSpec(target: full, files: 2000, size: SizeRange(exactly: 1024)),
                                             mode: .threads, workers: 2, seed: 1)
                    let outcome = try await session.run(filling, observer: NullObserver(), recorder: nil)
                    #expect(outcome.report.status == .failed, "\(outcome.report.status)")
                    #expect(outcome.report.ops > 0 && outcome.report.ops < 2000, "\(outcome.report.ops)")
                    #expect(outcome.report.errors > 0)
                    // A read-only target is refused before anything runs, naming it.
                    do throws(LoadgenError) {
                        _ = try await session.run(RunRequest(runID: "ro1", write: WriteSpec(target: readOnly, files: 5),
                                                             mode: .threads, workers: 1, seed: 1),
                                                  observer: NullObserver(), recorder: nil)
                        Issue.record("a run on a read-only target was not refused")
                    } catch {
                        #expect(error.message.contains("read-only"), "\(error.message)")
                    }
                    // And the agent serves the next run.
                    let next = try await session.run(RunRequest(runID: "ok1", write: WriteSpec(target: fine, files: 20),
                                                                mode: .threads, workers: 2, seed: 1),
                                                     observer: NullObserver(), recorder: nil)
                    #expect(next.report.status == .completed)
                    #expect(next.report.ops == 20)
                }
            }
        }
    }

    /// An agent started under `ulimit -n 64` (hard, so it cannot raise it): a run that needs more open files than
    /// that is refused before it starts, naming the limit, and the agent then serves a run that fits.
    @Test func anAgentUnderUlimit64RefusesWhatItCannotHoldAndServesTheNextRun() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let (agent, port) = try Self.startAgent(["/usr/bin/prlimit", "--nofile=64:64"], root: root)
        defer { agent.terminate(); agent.waitUntilExit() }
        let env = ["LOADGEN_DB": root + "/db.sqlite"]
        let big = try await TestSupport.run(["coordinate", "--agents", "127.0.0.1:\(port)", "--target", root, "--files", "50",
                                             "--mode", "threads", "--workers", "60"], environment: env, timeout: 20)
        #expect(big.status == 2, "\(big.stderr)")
        #expect(big.stderr.contains("--workers 60 in threads mode needs about 92 open files"), "\(big.stderr)")
        #expect(big.stderr.contains("its limit is 64 (ulimit -n)"), "\(big.stderr)")
        let small = try await TestSupport.run(["coordinate", "--agents", "127.0.0.1:\(port)", "--target", root, "--files", "50",
                                               "--mode", "threads", "--workers", "2"], environment: env, timeout: 20)
        #expect(small.status == 0, "\(small.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).filter { $0.hasPrefix("loadgen-") }.isEmpty)
    }

    /// Starts the agent binary with `launcher` in front of it and returns the process and the port it bound.
    static func startAgent(_ launcher: [String], root: String, binary: String = TestSupport.binary,
                           environment: [String: String]? = nil) throws -> (Process, Int) {
        let agent = Process()
        agent.executableURL = URL(fileURLWithPath: launcher[0])
        agent.arguments = Array(launcher.dropFirst()) + [binary, "agent", "--listen", "127.0.0.1:0", "--insecure", "--allow-root", root]
        if let environment { agent.environment = environment }
        let output = Pipe()
        agent.standardError = output
        agent.standardOutput = output
        try agent.run()
        var port = 0
        var seen = ""
        let deadline = Date().addingTimeInterval(10)
        while port == 0, Date() < deadline, agent.isRunning {
            seen += String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
            if let range = seen.range(of: "listening on 127.0.0.1:") {
                port = Int(seen[range.upperBound...].prefix { $0.isNumber }) ?? 0
            }
        }
        if port == 0 { agent.terminate() }
        try #require(port > 0, "the agent did not say where it listens: \(seen)")
        return (agent, port)
    }

    /// Out of descriptors while accepting (EMFILE): the agent's accept loop backs off and goes on, and once the
    /// flood is gone it serves a run.
    @Test func anAgentOutOfDescriptorsWhileAcceptingLivesOn() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let (agent, port) = try Self.startAgent(["/usr/bin/prlimit", "--nofile=48:48"], root: root)
        defer { agent.terminate(); agent.waitUntilExit() }
        var flood: [Int32] = []
        for _ in 0..<80 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(port).bigEndian
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            flood.append(fd)
        }
        try await Task.sleep(for: .milliseconds(500))
        for fd in flood { close(fd) }
        try await Task.sleep(for: .milliseconds(300))
        #expect(agent.isRunning, "the agent died of the flood")
        // The flood's connections still queued in the backlog are accepted (at the backed-off pace) and found closed
        // only now: until then they count against the address's handshake allowance, and the agent's refusal says
        // to try again shortly. A bounded number of tries, as a user would.
        let arguments = ["coordinate", "--agents", "127.0.0.1:\(port)", "--target", root, "--files", "50", "--mode", "threads",
                         "--workers", "2", "--no-store"]
        var run = try await TestSupport.run(arguments, timeout: 30)
        for _ in 0..<20 where run.status != 0 && run.stderr.contains("still in their handshake") {
            try await Task.sleep(for: .milliseconds(250))
            run = try await TestSupport.run(arguments, timeout: 30)
        }
        #expect(run.status == 0, "\(run.stderr)")
    }

    /// An agent that is not root (as systemd, the container and Kubernetes run it) serves runs: no socket option
    /// it sets needs privileges (one set SO_DEBUG by mistake, which only root may).
    @Test func anAgentThatIsNotRootServesRuns() async throws {
        guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else { return }
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        chmod(root, 0o777)
        // The binary must be reachable by nobody: the build directory may not be.
        let dir = try TestSupport.makeTemporaryDirectory("lgbin")
        defer { TestSupport.remove(dir) }
        chmod(dir, 0o755)
        let binary = dir + "/loadgen"
        try FileManager.default.copyItem(atPath: TestSupport.binary, toPath: binary)
        let (agent, port) = try Self.startAgent(["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], root: root,
                                                binary: binary, environment: ["HOME": "/nonexistent", "TMPDIR": root])
        defer { agent.terminate(); agent.waitUntilExit() }
        for mode in ["threads", "async"] {
            let run = try await TestSupport.run(["coordinate", "--agents", "127.0.0.1:\(port)", "--target", root, "--files", "50",
                                                 "--mode", mode, "--workers", "2", "--no-store"], timeout: 30)
            #expect(run.status == 0, "\(mode): \(run.stderr)")
        }
        #expect(agent.isRunning)
    }
}

