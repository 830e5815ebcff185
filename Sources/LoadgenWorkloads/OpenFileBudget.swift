import Glibc
import LoadgenCore

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
    static var currentLimit: UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return UInt64.max }
        return UInt64(limit.rlim_cur)
    }

    /// The descriptors `request` needs in this process at once: one per worker (a file being written, a connection,
    /// an io_uring slot), three per worker process (its pipes), plus the reserve.
    static func needed(by request: RunRequest) -> UInt64 {
        let perWorker: UInt64 = request.mode == .processes ? 3 : 1
        return UInt64(Self.reserve) + perWorker * UInt64(max(0, request.workers))
    }

    /// Refuses a request that needs more open files than this process may have.
    static func check(_ request: RunRequest, agentID: String, limit: UInt64 = OpenFileBudget.currentLimit) throws(LoadgenError) {
        let needed = Self.needed(by: request)
        guard needed > limit else { return }
        let each = request.mode == .processes ? "three (a worker process's pipes)" : "one"
        throw .usage("--workers \(request.workers) in \(request.mode.rawValue) mode needs about \(needed) open files on agent \(agentID) (\(each) per worker and \(Self.reserve) to spare), but its limit is \(limit) (ulimit -n); raise the limit or use fewer workers.")
    }
}
