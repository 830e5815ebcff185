import Foundation

/// Who wrote a running run: enough to tell, later, whether that coordinator is still alive on this host.
/// A pid alone is not enough (pids are reused); the pid's start time and the boot id make it exact.
public struct ProcessIdentity: Sendable, Hashable {
    public var host: String
    public var pid: Int32
    /// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
    public var startTicks: Int64
    /// `/proc/sys/kernel/random/boot_id`: changes at every boot.
    public var bootID: String

    public init(host: String, pid: Int32, startTicks: Int64, bootID: String) {
        self.host = host
        self.pid = pid
        self.startTicks = startTicks
        self.bootID = bootID
    }

    /// This process.
    public static func current(host: String) -> ProcessIdentity {
        let pid = getpid()
        return ProcessIdentity(host: host, pid: pid, startTicks: startTicks(of: pid) ?? 0, bootID: currentBootID())
    }

    public static func currentBootID() -> String {
        (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    }

    /// The start time of a live process, or nil when there is no such process.
    public static func startTicks(of pid: Int32) -> Int64? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")")
        else { return nil }
        // Fields after the command name (which may hold spaces) start at field 3.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19 else { return nil }
        return Int64(fields[19])
    }

    /// Whether the process this identity names is still running (nil when that cannot be told from here).
    public func isAlive(seenFrom here: ProcessIdentity) -> Bool? {
        guard self.host == here.host else { return nil }
        guard self.bootID == here.bootID else { return false }
        guard let ticks = Self.startTicks(of: self.pid) else { return false }
        return ticks == self.startTicks
    }
}
