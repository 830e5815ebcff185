import Foundation
import Testing
@testable import LoadgenCore

/// Helpers shared by the tests: temporary directories, the package's files, the built binary.
enum TestSupport {
    /// The package root, found from this file's path (tests read `schemas/` from there).
    static let packageRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        fatalError("Package.swift not found above \(#filePath)")
    }()

    /// `loadgen coordinate --target <fresh dir>` with `arguments` is refused with exit 2 and a sentence holding
    /// `words`, and leaves nothing (no file, no directory) beside the store.
    static func expectWriteRefusal(_ arguments: [String], words: String) async throws {
        let dir = try Self.makeTemporaryDirectory()
        defer { Self.remove(dir) }
        let out = try await Self.run(["coordinate", "--target", dir] + arguments, environment: ["LOADGEN_DB": dir + "/db.sqlite"])
        #expect(out.status == 2, "\(arguments): \(out.stderr)")
        #expect(out.stderr.contains(words), "\(out.stderr)")
        let left = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        #expect(left.filter { !$0.hasPrefix("db.sqlite") }.isEmpty, "\(arguments): \(left)")
    }

    /// The `loadgen` binary built beside the test bundle.
    static let binary: String = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("loadgen").path
    }()

    /// A fresh directory under the system temp directory, removed by `cleanup`.
    static func makeTemporaryDirectory(_ name: String = "lgtest") throws -> String {
        let path = NSTemporaryDirectory() + "\(name)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func remove(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Every regular file under `path`, recursively.
    static func files(under path: String) -> [String] {
        guard let e = FileManager.default.enumerator(atPath: path) else { return [] }
        var out: [String] = []
        while let item = e.nextObject() as? String {
            var isDir: ObjCBool = false
            // The run's marker is loadgen's bookkeeping, not one of the files the workload made.
            if item == ".loadgen-run" || item.hasSuffix("/.loadgen-run") { continue }
            if FileManager.default.fileExists(atPath: path + "/" + item, isDirectory: &isDir), !isDir.boolValue {
                out.append(item)
            }
        }
        return out
    }

    static func fileSize(_ path: String) -> UInt64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.uint64Value ?? 0
    }

    static var isRoot: Bool { getuid() == 0 }

    /// Runs mount (or umount) with these arguments; throws when it fails.
    static func mount(_ arguments: [String], command: String = "/bin/mount") throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command)
        process.arguments = arguments.filter { $0 != "-u" }
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw LoadgenError.io("\(command) \(arguments.joined(separator: " ")) failed")
        }
    }

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
        /// Peak resident memory of the binary, when measured (`/usr/bin/time`).
        var peakMemoryKiB: Int?
    }

    /// Runs the built binary with a time limit and returns its exit status and output. Waits without blocking a
    /// thread of the (two-thread) cooperative pool, so tests running beside it are not starved.
    /// Runs the openssl command line (certificates for the TLS tests); throws when it fails.
    static func openssl(_ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw LoadgenError.io("openssl \(args.first ?? "") failed") }
    }

    /// - Parameter launcher: a command that runs loadgen, such as `["/usr/bin/prlimit", "--nofile=256"]`.
    static func run(_ arguments: [String], environment: [String: String] = [:], timeout: TimeInterval = 60,
                    measuringPeakMemory: Bool = false, launcher: [String] = []) async throws -> Output {
        let process = Process()
        if let first = launcher.first {
            process.executableURL = URL(fileURLWithPath: first)
            process.arguments = Array(launcher.dropFirst()) + [binary] + arguments
        } else if measuringPeakMemory {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/time")
            process.arguments = ["-f", "loadgen-peak-rss-kib=%M", binary] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = arguments
        }
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let outData = Locked(Data())
        let errData = Locked(Data())
        let pending = Locked(2)
        for (pipe, box) in [(out, outData), (err, errData)] {
            DispatchQueue.global().async {
                let d = pipe.fileHandleForReading.readDataToEndOfFile()
                box.withLock { $0 = d }
                pending.withLock { $0 -= 1 }
            }
        }
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
        if process.isRunning {
            process.terminate()
            try await Task.sleep(for: .milliseconds(200))
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            Issue.record("loadgen \(arguments.joined(separator: " ")) did not finish within \(timeout)s")
        }
        while process.isRunning || pending.value > 0 { try await Task.sleep(for: .milliseconds(5)) }
        var stderr = String(decoding: errData.value, as: UTF8.self)
        var peak: Int?
        if measuringPeakMemory, let range = stderr.range(of: "loadgen-peak-rss-kib=") {
            peak = Int(stderr[range.upperBound...].prefix { $0.isNumber })
            stderr = String(stderr[..<range.lowerBound])
        }
        return Output(status: process.terminationStatus, stdout: String(decoding: outData.value, as: UTF8.self),
                      stderr: stderr, peakMemoryKiB: peak)
    }
}
