import Glibc
import LoadgenCore
import NIOCore

/// Open files a run needs on one host against the process's limit (`ulimit -n`).
///
/// Every connection, every file being written, every worker process's pipes and every io_uring direct-descriptor
/// slot counts against `RLIMIT_NOFILE`. A run past it would fail part-way with "too many open files" counted as
/// errors, so it is refused before anything starts instead. loadgen raises its soft limit to the hard one at start
/// (as Go programs such as vegeta, k6 and hey get from their runtime), so the hard limit is what counts.
public enum OpenFileBudget {
    /// Descriptors kept aside for everything else: the run store, the coordinator or agent sockets, event loops,
    /// standard streams.
    static let reserve = 64

    /// Raises the soft limit to the hard limit; returns the soft limit now in force.
    @discardableResult
    public static func raiseSoftLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return UInt64.max }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { return UInt64(raised.rlim_max) }
        }
        return UInt64(limit.rlim_cur)
    }

    /// The soft limit in force.
    public static var currentLimit: UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return UInt64.max }
        return UInt64(limit.rlim_cur)
    }

    /// The descriptors `request` needs at once in the agent's process on a host with `cores` cores, and what each
    /// worker holds. Async writes hold none (files open into io_uring's own table), but that table's slots, one per
    /// file in flight, may not exceed the limit either.
    static func needed(by request: RunRequest, cores: Int) -> (files: UInt64, each: String) {
        let workers = UInt64(max(0, request.workers))
        switch (request.mode, request.workload) {
        case (.processes, _):
            return (UInt64(Self.reserve) + 3 * workers, "three pipes per worker process")
        case (.async, .write):
            return (max(UInt64(Self.reserve), workers), "an io_uring slot per file in flight")
        case (.async, .fetch):
            // Each event loop (one per core) holds an epoll, an eventfd and a timerfd.
            return (UInt64(Self.reserve) + workers + 3 * UInt64(max(1, cores)), "a connection per worker")
        case (_, .write):
            return (UInt64(Self.reserve) + workers, "a file being written per worker")
        case (_, .fetch):
            return (UInt64(Self.reserve) + workers, "a connection per worker")
        }
    }

    /// Refuses a request that needs more open files than a process limited to `limit` may have.
    public static func check(_ request: RunRequest, agentID: String, cores: Int = System.coreCount,
                             limit: UInt64 = OpenFileBudget.currentLimit) throws(LoadgenError) {
        let (needed, each) = Self.needed(by: request, cores: cores)
        guard needed > limit else { return }
        throw .usage("--workers \(request.workers) in \(request.mode.rawValue) mode needs about \(needed) open files on agent \(agentID) (\(each), and \(Self.reserve) to spare), but its limit is \(limit) (ulimit -n); raise the limit or use fewer workers.")
    }
}
