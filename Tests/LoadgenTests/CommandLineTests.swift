import Foundation
import Testing
@testable import LoadgenCore

/// The built binary, end to end: what users and scripts see.
@Suite(.timeLimit(.minutes(3)))
struct CommandLineTests {
    static func jsonLines(_ text: String) throws -> [[String: Any]] {
        try text.split(separator: "\n").map { line in
            try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
        }
    }

    static let reportSchema = TestSupport.packageRoot.appendingPathComponent("schemas/run-report.schema.json")

    @Test func everyModeRunsAndPrintsOneSchemaValidJSONObjectPerRun() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let db = root + "/runs.sqlite"
        let target = root + "/t"
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        let out = try await TestSupport.run(["coordinate", "--target", target, "--files", "50", "--size", "1-8",
                                       "--mode", "sequential,threads,processes", "--workers", "2", "--keep", "--json",
                                       "--label", "e2e"], environment: ["LOADGEN_DB": db])
        #expect(out.status == 0, "\(out.stderr)")
        let lines = try Self.jsonLines(out.stdout)
        #expect(lines.count == 3)
        let validator = try JSONSchemaValidator(schemaFile: Self.reportSchema)
        for line in lines {
            #expect(validator.validate(line) == [])
            #expect(line["ops"] as? Int == 50)
            #expect(line["status"] as? String == "completed")
            #expect(line["label"] as? String == "e2e")
            #expect((line["per_agent"] as? [Any])?.count == 1)
        }
        #expect(lines.map { $0["mode"] as? String } == ["sequential", "threads", "processes"])
        // With --keep each run's directory holds exactly its 50 files.
        let runDirs = try FileManager.default.contentsOfDirectory(atPath: target)
        #expect(runDirs.count == 3)
        for dir in runDirs {
            #expect(TestSupport.files(under: target + "/" + dir).count == 50)
        }
        // The human summary and the comparison go to stderr when --json is given.
        #expect(out.stderr.contains("speed-up"))
    }

    /// Open files: a run needing more than the hard limit is refused before anything is made; a low soft limit is
    /// raised to the hard one at start, so the same run then completes.
    @Test func runsPastTheOpenFileLimitAreRefusedAndASoftLimitIsRaised() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let env = ["LOADGEN_DB": root + "/db.sqlite"]
        let run = ["coordinate", "--target", root, "--files", "200", "--mode", "threads", "--workers", "200", "--json"]
        let refused = try await TestSupport.run(run, environment: env, launcher: ["/usr/bin/prlimit", "--nofile=200:200"])
        #expect(refused.status == 2, "\(refused.stderr)")
        #expect(refused.stderr.contains("--workers 200 in threads mode needs about 232 open files"), "\(refused.stderr)")
        #expect(refused.stderr.contains("its limit is 200 (ulimit -n)"), "\(refused.stderr)")
        #expect(refused.stdout.isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).filter { $0.hasPrefix("loadgen-") }.isEmpty)

        let raised = try await TestSupport.run(run, environment: env, launcher: ["/usr/bin/prlimit", "--nofile=200:"])
        #expect(raised.status == 0, "\(raised.stderr)")
        #expect(try Self.jsonLines(raised.stdout).first?["ops"] as? Int == 200)

        // A comparison whose later mode needs more (three pipes per worker process) is refused whole, before its
        // first mode runs.
        let compare = ["coordinate", "--target", root, "--files", "100", "--mode", "threads,processes", "--workers", "100", "--json"]
        let partial = try await TestSupport.run(compare, environment: env, launcher: ["/usr/bin/prlimit", "--nofile=200:200"])
        #expect(partial.status == 2, "\(partial.stderr)")
        #expect(partial.stderr.contains("--workers 100 in processes mode needs about 332 open files"), "\(partial.stderr)")
        #expect(partial.stdout.isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).filter { $0.hasPrefix("loadgen-") }.isEmpty)
        let history = try await TestSupport.run(["history", "--json"], environment: env)
        let runs = try JSONSerialization.jsonObject(with: Data(history.stdout.utf8)) as? [Any]
        #expect(runs?.count == 1, "only the run that was allowed: \(history.stdout)")
    }

    @Test func withoutKeepTheRunRemovesItsFilesAndTimesIt() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let out = try await TestSupport.run(["coordinate", "--target", root, "--files", "40", "--mode", "threads", "--json"],
                                      environment: ["LOADGEN_DB": root + "/db.sqlite"])
        #expect(out.status == 0, "\(out.stderr)")
        let line = try #require(try Self.jsonLines(out.stdout).first)
        let cleanup = try #require(line["cleanup"] as? [String: Any])
        #expect(cleanup["ops"] as? Int == 40)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).filter { $0.hasPrefix("loadgen-") }.isEmpty)
    }

    @Test func theHumanSummaryGoesToStdoutWithoutJSON() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let out = try await TestSupport.run(["coordinate", "--target", root, "--files", "20", "--mode", "sequential,threads"],
                                      environment: ["LOADGEN_DB": root + "/db.sqlite"])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout.contains("20 created"))
        #expect(out.stdout.contains("speed-up"))
        #expect(out.stdout.contains("cleanup"))
    }

    /// Each refusal: exit 2, one sentence naming the bad value, nothing created.
    @Test(arguments: [
        (["--files", "0"], "--files"),
        (["--files=-3"], "-3"),
        (["--workers", "0"], "--workers"),
        (["--size", "12x"], "12x"),
        (["--size", "9k-1k"], "9k-1k"),
        (["--mode", "fast"], "fast"),
        (["--dirs", "0"], "--dirs"),
        (["--fsync", "sometimes"], "sometimes"),
        (["--interval", "soon"], "soon"),
        (["--target", "http://127.0.0.1:9/"], "http://127.0.0.1:9/"),
    ])
    func refusalsExitTwoNamingTheValueAndCreateNothing(arguments: [String], named: String) async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        let out = try await TestSupport.run(["coordinate", "--target", root] + arguments,
                                      environment: ["LOADGEN_DB": root + "/db.sqlite"])
        #expect(out.status == 2, "\(arguments): \(out.stderr)")
        #expect(out.stderr.contains(named), "\(out.stderr)")
        #expect(out.stdout.isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: root).filter { $0.hasPrefix("loadgen-") }.isEmpty)
    }

    @Test func aMissingTargetIsRefused() async throws {
        let out = try await TestSupport.run(["coordinate", "--target", "/nonexistent/lg-target", "--files", "1"],
                                      environment: ["LOADGEN_DB": NSTemporaryDirectory() + "lg-missing.sqlite"])
        #expect(out.status == 2)
        #expect(out.stderr.contains("/nonexistent/lg-target"))
    }

    @Test func aFileAsTargetIsRefused() async throws {
        let root = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(root) }
        _ = FileManager.default.createFile(atPath: root + "/plain", contents: Data("x".utf8))
        let out = try await TestSupport.run(["coordinate", "--target", root + "/plain"], environment: ["LOADGEN_DB": root + "/db.sqlite"])
        #expect(out.status == 2)
        #expect(out.stderr.contains("not a directory"))
    }

    @Test func helpTeachesWithExamples() async throws {
        let out = try await TestSupport.run(["coordinate", "--help"])
        #expect(out.status == 0)
        #expect(out.stdout.contains("Examples:"))
        #expect(out.stdout.contains("--fsync"))
        #expect(out.stdout.contains("--keep"))
    }

    /// A full disk mid-run: the run ends failed with ENOSPC counted, and the files it reports are exactly the files
    /// on disk. Needs root to mount a tiny tmpfs (CI runs as root).
    @Test(.enabled(if: TestSupport.isRoot, "mounting a tmpfs needs root"))
    func aFullDiskEndsTheRunWithExactCounts() async throws {
        let mountPoint = try TestSupport.makeTemporaryDirectory("lgfull")
        defer { TestSupport.remove(mountPoint) }
        let mount = Process()
        mount.executableURL = URL(fileURLWithPath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", "size=256k", "tmpfs", mountPoint]
        try mount.run()
        mount.waitUntilExit()
        guard mount.terminationStatus == 0 else {
            Issue.record("could not mount a tmpfs at \(mountPoint)")
            return
        }
        defer {
            let umount = Process()
            umount.executableURL = URL(fileURLWithPath: "/bin/umount")
            umount.arguments = [mountPoint]
            try? umount.run()
            umount.waitUntilExit()
        }
        for mode in ["threads", "processes"] {
            let out = try await TestSupport.run(["coordinate", "--target", mountPoint, "--files", "2000", "--size", "4k",
                                           "--mode", mode, "--workers", "2", "--keep", "--json"],
                                          environment: ["LOADGEN_DB": NSTemporaryDirectory() + "lg-full.sqlite"])
            #expect(out.status == 1, "\(out.stderr)")
            let line = try #require(try Self.jsonLines(out.stdout).first)
            #expect(line["status"] as? String == "failed")
            let kinds = line["errors_by_kind"] as? [String: Int] ?? [:]
            #expect((kinds["ENOSPC"] ?? 0) >= 1, "\(kinds)")
            let created = line["ops"] as? Int ?? -1
            #expect(created > 0 && created < 2000)
            let dirs = try FileManager.default.contentsOfDirectory(atPath: mountPoint).filter { $0.hasPrefix("loadgen-") }
            let runDir = try #require(dirs.first { dir in (line["run_id"] as? String).map { dir.contains($0) } ?? false })
            #expect(TestSupport.files(under: mountPoint + "/" + runDir).count == created)
            #expect((line["message"] as? String)?.contains("ENOSPC") == true)
            try FileManager.default.removeItem(atPath: mountPoint + "/" + runDir)
        }
    }
}

/// Ctrl-C on the coordinator: every agent stops, the run ends aborted (exit 1) and is stored so.
@Suite(.timeLimit(.minutes(1)))
struct InterruptTests {
    @Test func ctrlCAbortsTheRunAndKeepsIt() async throws {
        let dir = try TestSupport.makeTemporaryDirectory()
        defer { TestSupport.remove(dir) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: TestSupport.binary)
        // Bounded: at most 2,000,000 empty files, interrupted long before.
        process.arguments = ["coordinate", "--target", dir, "--files", "2000000", "--size", "0", "--mode", "threads",
                             "--keep", "--json", "--db", dir + "/db.sqlite"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        // Wait until files are being written, then interrupt.
        var runDirectory: String?
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            runDirectory = try FileManager.default.contentsOfDirectory(atPath: dir).first { $0.hasPrefix("loadgen-") }
            if let runDirectory, TestSupport.files(under: dir + "/" + runDirectory).count > 1000 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        kill(process.processIdentifier, SIGINT)
        let stopped = Date()
        while process.isRunning, Date().timeIntervalSince(stopped) < 10 { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!process.isRunning, "the coordinator did not stop within 10 s of Ctrl-C")
        #expect(process.terminationStatus == 1)
        let line = try #require(try CommandLineTests.jsonLines(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)).first)
        #expect(line["status"] as? String == "aborted")
        let ops = line["ops"] as? Int ?? 0
        #expect(ops > 0 && ops < 2_000_000)
        // No load after the stop, and what is on disk is what was counted.
        let counted = TestSupport.files(under: dir + "/" + runDirectory!).count
        try await Task.sleep(for: .milliseconds(300))
        #expect(TestSupport.files(under: dir + "/" + runDirectory!).count == counted)
        #expect(counted == ops)
        let history = try await TestSupport.run(["history", "--json", "--db", dir + "/db.sqlite"])
        let runs = try #require(try JSONSerialization.jsonObject(with: Data(history.stdout.utf8)) as? [[String: Any]])
        #expect(runs.first?["status"] as? String == "aborted")
    }
}
