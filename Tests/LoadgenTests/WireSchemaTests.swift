import Foundation
import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing
@testable import LoadgenCore
@testable import LoadgenWire

/// The wire protocol against its contract in `schemas/wire/`, and the frame codec on a NIO channel.
struct WireSchemaTests {
    static let wireDir = TestSupport.packageRoot.appendingPathComponent("schemas/wire")

    /// One realistic message of each type (used to regenerate the examples with LOADGEN_UPDATE_SNAPSHOT=1).
    static var samples: [WireMessage] {
        let request = RunRequest(runID: "261125-214512-3f9a", label: "nightly",
                                 write: WriteSpec(target: "/data", files: 100_000, size: SizeRange(lowerBytes: 1024, upperBytes: 65536),
                                                  dirs: 100, fsync: .end, keep: false),
                                 mode: .threads, workers: 8, seed: 4_242_424_242)
        var tally = Tally()
        tally.ops = 48_210
        tally.bytes = 1_580_236_800
        tally.recordError(.noSpace, "creating d000042/Xy...txt: No space left on device")
        for v: UInt64 in [18_000, 19_500, 21_000, 21_000, 250_000] { tally.recordLatency(v) }
        let nonceA = String(repeating: "3f", count: 32)
        let nonceB = String(repeating: "a7", count: 32)
        return [
            .hello(.init(loadgenVersion: "0.1.0", coordinatorHost: "bench-01", nonce: nonceA)),
            .welcome(.init(loadgenVersion: "0.1.0", agentID: "storage-07", host: "storage-07", cores: 32, nonce: nonceB,
                           authRequired: true, proof: String(repeating: "5c", count: 32))),
            .auth(.init(proof: String(repeating: "e1", count: 32))),
            .ready(.init(policy: AgentPolicySummary(allowedRoots: ["/data", "/tmp"], maxFiles: 10_000_000, maxBytes: 68_719_476_736,
                                                    maxWorkers: 1024, maxDurationNanos: 3_600_000_000_000, maxRate: 1_000_000,
                                                    destinations: DestinationPolicy(allowHosts: ["*.lab.example"],
                                                                                    allowCIDRs: [CIDR("10.0.0.0/8")!],
                                                                                    denyCIDRs: [CIDR("10.9.0.0/16")!])),
                         openFileLimit: 1_048_576)),
            .ping(.init(seq: 0, sentNanos: 8_812_345_678_901)),
            .pong(.init(seq: 0, sentNanos: 8_812_345_678_901, agentWallNanos: 1_795_643_112_345_678_901)),
            .prepare(.init(request: request)),
            .work(.init(request: request, runDirectory: "/data/loadgen-261125-214512-3f9a-storage-07", agentSeed: 77_123_456_789,
                        workerIndex: 3, firstIndex: 37_500, count: 12_500)),
            .prepared(.init(runID: request.runID, runDirectory: "/data/loadgen-261125-214512-3f9a-storage-07")),
            .refused(.init(runID: request.runID, code: .policy,
                           message: "This agent allows at most 1000000 files per run (--max-files); the run asks for 5000000.")),
            .start(.init(runID: request.runID, phase: .main, delayNanos: 249_300_000)),
            .interval(.init(runID: request.runID, phase: .main, seq: 3, elapsedNanos: 3_004_112_000, tally: tally)),
            .phaseDone(.init(runID: request.runID, phase: .main, status: .completed, message: nil, ops: 100_000,
                             bytes: 3_276_800_000, errors: 0, durationNanos: 6_210_455_000, firstDoneNanos: 6_101_002_000,
                             lastDoneNanos: 6_210_455_000)),
            .finish(.init(runID: request.runID)),
            .finished(.init(runID: request.runID, message: nil)),
            .closed(.init(runID: request.runID)),
            .clean(.init(target: "/data", includeKept: false, dryRun: false)),
            .cleaned(.init(target: "/data", report: {
                var report = CleanReport(target: "/data", dryRun: false)
                report.removed = [CleanReport.Entry(path: "/data/loadgen-261124-090000-1b2c-storage-07", runID: "261124-090000-1b2c",
                                                    agentID: "storage-07", keep: false, files: 61_234, directories: 100,
                                                    bytes: 2_006_515_712)]
                report.inUse = ["/data/loadgen-261125-214512-3f9a-storage-07"]
                report.kept = ["/data/loadgen-261120-180000-77aa-storage-07"]
                report.unmarked = ["/data/loadgen-old-copy"]
                return report
            }(), refusal: nil)),
            .heartbeat(.init(seq: 41)),
            .abort(.init(runID: request.runID, reason: "The coordinator was interrupted (Ctrl-C).")),
            .failure(.init(code: .authentication, message: "The coordinator did not prove it holds this agent's secret.")),
        ]
    }

    static func canonical(_ message: WireMessage) throws -> String {
        String(decoding: try FrameCodec.makeEncoder().encode(message), as: UTF8.self) + "\n"
    }

    static func hex(_ bytes: [UInt8]) -> String {
        // 32 bytes a line, so a reader can follow the layout in frames.proto.
        stride(from: 0, to: bytes.count, by: 32).map { start in
            bytes[start..<min(start + 32, bytes.count)].map { String(format: "%02x", $0) }.joined(separator: " ")
        }.joined(separator: "\n") + "\n"
    }

    static func unhex(_ text: String) -> [UInt8] {
        text.split(whereSeparator: { $0 == " " || $0 == "\n" }).map { UInt8($0, radix: 16)! }
    }

    @Test func everyMessageTypeHasAnExampleThatDecodesAndValidates() throws {
        let examples = Self.wireDir.appendingPathComponent("examples")
        if ProcessInfo.processInfo.environment["LOADGEN_UPDATE_SNAPSHOT"] == "1" {
            for message in Self.samples {
                if message.kind.travelsAsJSON {
                    try Self.canonical(message).write(to: examples.appendingPathComponent("\(message.kind.rawValue).json"),
                                                      atomically: true, encoding: .utf8)
                } else {
                    try Self.hex(try FrameCodec.encode(message)).write(
                        to: examples.appendingPathComponent("\(message.kind.rawValue).binpb.txt"), atomically: true, encoding: .utf8)
                }
            }
        }
        let validator = try JSONSchemaValidator(schemaFile: Self.wireDir.appendingPathComponent("messages.schema.json"))
        let files = try FileManager.default.contentsOfDirectory(atPath: examples.path)
        let kinds = WireMessage.Kind.allCases
        #expect(Set(files) == Set(kinds.map { "\($0.rawValue)\($0.travelsAsJSON ? ".json" : ".binpb.txt")" }))
        let defs = validator.root["$defs"] as! [String: Any]
        for kind in kinds where kind.travelsAsJSON {
            let text = try String(contentsOf: examples.appendingPathComponent("\(kind.rawValue).json"), encoding: .utf8)
            let message = try FrameCodec.decodeBody(Array(text.utf8))
            #expect(message.kind == kind)
            #expect(try Self.canonical(message) == text, "\(kind.rawValue).json is not in canonical form")
            let object = try JSONSerialization.jsonObject(with: Data(text.utf8))
            #expect(validator.validate(object) == [], "\(kind.rawValue)")
            let def = try #require(defs[kind.rawValue] as? [String: Any], "no $defs entry for \(kind.rawValue)")
            let perType = JSONSchemaValidator(root: validator.root)
            #expect(perType.validate(object, against: def) == [], "\(kind.rawValue)")
        }
        // The binary examples are whole frames: they decode to the sample, and the sample encodes to exactly them.
        for sample in Self.samples where !sample.kind.travelsAsJSON {
            let text = try String(contentsOf: examples.appendingPathComponent("\(sample.kind.rawValue).binpb.txt"), encoding: .utf8)
            let frame = Self.unhex(text)
            #expect(try FrameCodec.encode(sample) == frame, "\(sample.kind.rawValue).binpb.txt is not what the codec writes")
            var decoder = FrameDecoder()
            decoder.append(frame)
            #expect(try decoder.nextMessage() == sample)
        }
    }

    @Test func theSchemaListsExactlyTheJSONMessageTypes() throws {
        let validator = try JSONSchemaValidator(schemaFile: Self.wireDir.appendingPathComponent("messages.schema.json"))
        let types = ((validator.root["properties"] as! [String: Any])["type"] as! [String: Any])["enum"] as! [String]
        #expect(Set(types) == Set(WireMessage.Kind.allCases.filter(\.travelsAsJSON).map(\.rawValue)))
        let title = validator.root["title"] as! String
        #expect(title.hasSuffix("protocol version \(WireMessage.protocolVersion)"))
    }

    @Test func theProtoFileIsOfThisProtocolVersionAndItsCodeIsGeneratedFromIt() throws {
        let proto = try String(contentsOf: Self.wireDir.appendingPathComponent("frames.proto"), encoding: .utf8)
        #expect(proto.contains("package loadgen.wire.v\(WireMessage.protocolVersion);"))
        #expect(proto.contains("protocol version \(WireMessage.protocolVersion)"))
        let generated = try String(contentsOf: TestSupport.packageRoot.appendingPathComponent(
            "Sources/LoadgenCore/Generated/frames.pb.swift"), encoding: .utf8)
        // Every message and field of the proto file appears in the generated code (a stale file lacks a new one).
        for line in proto.split(separator: "\n") {
            let words = line.trimmingCharacters(in: .whitespaces).split(separator: " ")
            if words.first == "message", words.count > 1 {
                #expect(generated.contains("struct Loadgen_Wire_V\(WireMessage.protocolVersion)_\(words[1]):"), "\(words[1])")
            }
            if let eq = words.firstIndex(of: "="), eq > 0, !(words.first ?? "").hasPrefix("//"), words.first != "syntax" {
                // Field names sit in the generated name tables as `<name>\0`.
                let name = String(words[eq - 1])
                #expect(generated.contains(name + "\\0"), "\(name) is not in the generated code")
            }
        }
    }

    // MARK: - The codec on a channel

    @Test func decoderPassesNIOsVerifier() throws {
        let pairs = try Self.samples.map { message -> (ByteBuffer, [WireMessage]) in
            (ByteBuffer(bytes: try FrameCodec.encode(message)), [message])
        }
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { WireFrameDecoder() }
    }

    @Test func anOversizedLengthIsAnErrorBeforeTheBody() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(WireFrameDecoder()))
        var buffer = channel.allocator.buffer(capacity: 4)
        buffer.writeInteger(UInt32.max, endianness: .big)
        #expect(throws: LoadgenError.self) { try channel.writeInbound(buffer) }
        _ = try? channel.finish()
    }

    @Test func encoderAndDecoderRoundTripOnAChannel() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addWireCodec()
        for message in Self.samples {
            try channel.writeOutbound(message)
            let bytes = try #require(try channel.readOutbound(as: ByteBuffer.self))
            try channel.writeInbound(bytes)
            #expect(try channel.readInbound(as: WireMessage.self) == message)
        }
        _ = try channel.finish()
    }

    // MARK: - The secret

    @Test func proofsVerifyOnlyWithTheSameSecretAndNonces() {
        let a = SharedSecret(bytes: Array("0123456789abcdef0123".utf8))
        let b = SharedSecret(bytes: Array("0123456789abcdef0124".utf8))
        let proof = a.proof(label: Handshake.agentLabel, first: "n1", second: "n2")
        #expect(proof.count == 64)
        #expect(a.verify(proof, label: Handshake.agentLabel, first: "n1", second: "n2"))
        #expect(!b.verify(proof, label: Handshake.agentLabel, first: "n1", second: "n2"))
        #expect(!a.verify(proof, label: Handshake.coordinatorLabel, first: "n1", second: "n2"))
        #expect(!a.verify(proof, label: Handshake.agentLabel, first: "n2", second: "n1"))
        #expect(!a.verify(String(proof.dropLast()), label: Handshake.agentLabel, first: "n1", second: "n2"))
    }

    @Test func hmacMatchesAKnownVector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let secret = SharedSecret(bytes: Array("Jefe".utf8))
        let mac = secret.macOfBytes(Array("what do ya want for nothing?".utf8))
        #expect(mac.map { String(format: "%02x", $0) }.joined() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        // A proof covers the label and both nonces, separated so that no two inputs collide.
        #expect(secret.mac(label: "a", first: "b", second: "c") != secret.macOfBytes(Array("abc".utf8)))
    }

    @Test(arguments: [(0o644, "readable by group or others"), (0o640, "readable by group or others"), (0o600, "")])
    func secretFilesMustBePrivate(mode: Int, complaint: String) throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let path = dir + "/secret"
        try Data("0123456789abcdef0123456789abcdef\n".utf8).write(to: URL(fileURLWithPath: path))
        chmod(path, mode_t(mode))
        if complaint.isEmpty {
            _ = try SharedSecret.load(path: path)
        } else {
            do {
                _ = try SharedSecret.load(path: path)
                Issue.record("mode \(String(mode, radix: 8)) was accepted")
            } catch {
                #expect(error.message.contains(complaint))
            }
        }
    }

    /// In systemd's credentials directory (tmpfs with an ACL for the service's user) a credential shows 0440: the
    /// group bits are the ACL's mask, accepted there and nowhere else; other-read is refused even there.
    @Test func aCredentialMayShowTheACLMaskAsGroupRead() throws {
        let credentials = try TestSupport.makeTemporaryDirectory()
        let elsewhere = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(credentials); TestSupport.remove(elsewhere) }
        for dir in [credentials, elsewhere] {
            try Data("0123456789abcdef0123456789abcdef\n".utf8).write(to: URL(fileURLWithPath: dir + "/secret"))
            chmod(dir + "/secret", 0o440)
        }
        _ = try SharedSecret.load(path: credentials + "/secret", credentialsDirectory: credentials)
        _ = try SharedSecret.load(path: credentials + "/./secret", credentialsDirectory: credentials + "/")
        #expect(throws: LoadgenError.self) { try SharedSecret.load(path: elsewhere + "/secret", credentialsDirectory: credentials) }
        #expect(throws: LoadgenError.self) { try SharedSecret.load(path: credentials + "/secret") }
        chmod(credentials + "/secret", 0o444)
        #expect(throws: LoadgenError.self) { try SharedSecret.load(path: credentials + "/secret", credentialsDirectory: credentials) }
    }

    @Test func missingAndEmptySecretFilesAreRefused() throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        #expect(throws: LoadgenError.self) { try SharedSecret.load(path: dir + "/none") }
        let empty = dir + "/empty"
        try Data("\n".utf8).write(to: URL(fileURLWithPath: empty))
        chmod(empty, 0o600)
        #expect(throws: LoadgenError.self) { try SharedSecret.load(path: empty) }
    }
}
