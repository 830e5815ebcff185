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
    /// standard streams. Measured here, an idle agent holds 17 and one running a 2-worker write 21: 32 leaves room,
    /// and lets an agent under `ulimit -n 64` still serve small runs.
    static let reserve = 32

    /// Raises the soft limit to the hard limit (``currentLimit`` then reads what is in force).
    public static func raiseSoftLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
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
    static func needed(by request: RunRequest, cores: Int) -> (files: UInt64, why: String) {
        let workers = UInt64(max(0, request.workers))
        let reserve = UInt64(Self.reserve)
        let spare = "and \(Self.reserve) to spare"
        switch (request.mode, request.workload) {
        case (.processes, _):
            return (reserve + 3 * workers, "three pipes per worker process \(spare)")
        case (.async, .write):
            return (max(reserve, workers), "an io_uring slot per file in flight, which may not exceed the limit")
        case (.async, .fetch):
            // Each event loop (one per core) holds an epoll, an eventfd and a timerfd.
            let loops = UInt64(max(1, cores))
            return (reserve + workers + 3 * loops, "a connection per worker, three for each of \(loops) event loops \(spare)")
        case (_, .write):
            return (reserve + workers, "a file being written per worker \(spare)")
        case (_, .fetch):
            return (reserve + workers, "a connection per worker \(spare)")
        }
    }

    /// Refuses a request that needs more open files than a process limited to `limit` may have.
    public static func check(_ request: RunRequest, agentID: String, cores: Int = System.coreCount,
                             limit: UInt64 = OpenFileBudget.currentLimit) throws(LoadgenError) {
        let (needed, why) = Self.needed(by: request, cores: cores)
        guard needed > limit else { return }
        throw .usage("--workers \(request.workers) in \(request.mode.rawValue) mode needs about \(needed) open files on agent \(agentID) (\(why)), but its limit is \(limit) (ulimit -n); raise the limit or use fewer workers.")
    }
}
