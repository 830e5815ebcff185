import Foundation
import LoadgenCore
import NIOCore

/// Facts about this host, read once at the command line (nothing below the commands reads the environment).
enum HostEnvironment {
    static var hostName: String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count)
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "localhost" : name
    }

    /// The cores this process may use (NIO's count, which follows CPU affinity and cgroup quotas): the agent reports
    /// it, sizes event loops by it, and the coordinator checks open-file budgets with it.
    static var cores: Int { System.coreCount }

    /// systemd's credentials directory for this service (`LoadCredential=`), where a secret file may show the
    /// group bits of an ACL mask.
    static var credentialsDirectory: String? { ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"] }

    /// This binary, for worker processes (resolved through /proc, since argv[0] may be relative or bare).
    static var executablePath: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// A fresh run id: time-ordered and readable, `261125-214512-3f9a`.
    static func makeRunID() -> String {
        var t = time_t(time(nil))
        var parts = tm()
        localtime_r(&t, &parts)
        func pad(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let stamp = "\(pad((parts.tm_year + 1900) % 100))\(pad(parts.tm_mon + 1))\(pad(parts.tm_mday))-\(pad(parts.tm_hour))\(pad(parts.tm_min))\(pad(parts.tm_sec))"
        var suffix = String(UInt16.random(in: 0...UInt16.max), radix: 16)
        while suffix.count < 4 { suffix = "0" + suffix }
        return "\(stamp)-\(suffix)"
    }

    /// Yields once on SIGTERM or SIGINT (a daemon's stop request).
    static func terminations() -> AsyncStream<Void> {
        signals([SIGTERM, SIGINT]) { $0() }
    }

    /// Yields once per Ctrl-C; a second Ctrl-C while the first is being handled quits at once.
    static func interrupts() -> AsyncStream<Void> {
        let count = InterruptCount()
        return signals([SIGINT]) { yield in
            if count.increment() > 1 {
                FileHandle.standardError.write(Data("\nloadgen: interrupted again; quitting now.\n".utf8))
                exit(130)
            }
            yield()
        }
    }

    /// Delivers the given signals to `handle` (with a function that yields to the stream) instead of their default
    /// action, for as long as the stream is iterated.
    private static func signals(_ numbers: [Int32], _ handle: @escaping @Sendable (@escaping @Sendable () -> Void) -> Void)
        -> AsyncStream<Void>
    {
        AsyncStream { continuation in
            var boxes: [SignalSourceBox] = []
            for number in numbers {
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
                source.setEventHandler { handle { continuation.yield() } }
                source.resume()
                boxes.append(SignalSourceBox(source))
            }
            let sources = boxes
            continuation.onTermination = { _ in for box in sources { box.source.cancel() } }
        }
    }
}

import Synchronization

final class InterruptCount: Sendable {
    private let value = Mutex(0)
    func increment() -> Int { self.value.withLock { $0 += 1; return $0 } }
}

/// Carries a dispatch signal source into the stream's termination handler; cancelling a source is thread-safe.
final class SignalSourceBox: @unchecked Sendable {
    let source: any DispatchSourceSignal
    init(_ source: any DispatchSourceSignal) { self.source = source }
}
