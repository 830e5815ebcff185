import Glibc
import LoadgenCore

/// The CPU time this process has used, for the agent's report of how busy it was (a saturated generator makes a
/// run suspect).
public enum ProcessCPU {
    /// User and system time of every thread of this process so far (getrusage, RUSAGE_SELF).
    public static func now() -> CPUTime {
        var usage = rusage()
        guard getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage) == 0 else { return CPUTime() }
        func ns(_ t: timeval) -> UInt64 { UInt64(max(0, t.tv_sec)) * 1_000_000_000 + UInt64(max(0, t.tv_usec)) * 1000 }
        return CPUTime(userNanos: ns(usage.ru_utime), systemNanos: ns(usage.ru_stime))
    }
}
