import LoadgenCore

/// What an agent allows, whoever asks: the roots it writes under and caps on each run. A request beyond the policy
/// is refused before anything starts, with a sentence naming the limit, never silently clamped.
public struct AgentPolicy: Sendable, Hashable {
    /// Directories a write target must lie under; nil allows any (the embedded agent acts for its own user).
    public var allowedRoots: [String]?
    public var maxFiles: Int
    /// Bytes a write run may write (counted at the largest file size).
    public var maxBytes: UInt64
    public var maxWorkers: Int
    public var maxDurationNanos: UInt64
    /// Requests per second a fetch run may ask for.
    public var maxRate: Double
    /// Where fetch runs may connect (`--allow-host`, `--allow-cidr`, `--deny-cidr`; link-local and cloud metadata
    /// addresses refused unless allowed).
    public var destinations: DestinationPolicy

    public init(allowedRoots: [String]?, maxFiles: Int = 10_000_000, maxBytes: UInt64 = 64 << 30,
                maxWorkers: Int = 1024, maxDurationNanos: UInt64 = 3_600_000_000_000, maxRate: Double = 1_000_000,
                destinations: DestinationPolicy = DestinationPolicy()) {
        self.destinations = destinations
        self.allowedRoots = allowedRoots
        self.maxFiles = maxFiles
        self.maxBytes = maxBytes
        self.maxWorkers = maxWorkers
        self.maxDurationNanos = maxDurationNanos
        self.maxRate = maxRate
    }

    /// The embedded agent's policy: any root its user can write, loadgen's own hard limits.
    public static let embedded = AgentPolicy(allowedRoots: nil, maxFiles: RunRequest.Limits.maxFiles,
                                             maxBytes: ByteCount.maximum * 1024, maxWorkers: RunRequest.Limits.maxWorkers,
                                             maxDurationNanos: 7 * 24 * 3_600_000_000_000, maxRate: 10_000_000)

    public var summary: AgentPolicySummary {
        AgentPolicySummary(allowedRoots: self.allowedRoots ?? ["/"], maxFiles: self.maxFiles, maxBytes: self.maxBytes,
                           maxWorkers: self.maxWorkers, maxDurationNanos: self.maxDurationNanos, maxRate: self.maxRate,
                           destinations: self.destinations)
    }

    /// Refuses a request beyond this policy, naming the limit and the flag that sets it.
    public func check(_ request: RunRequest) throws(LoadgenError) {
        if request.workers > self.maxWorkers {
            throw .policy("This agent allows at most \(self.maxWorkers) workers per run (--max-workers); the run asks for \(request.workers).")
        }
        if let write = request.write {
            if write.files > self.maxFiles {
                throw .policy("This agent allows at most \(self.maxFiles) files per run (--max-files); the run asks for \(write.files).")
            }
            let worst = UInt64(write.files).multipliedReportingOverflow(by: write.size.upperBytes)
            if worst.overflow || worst.partialValue > self.maxBytes {
                throw .policy("This agent allows at most \(ByteCount.format(self.maxBytes)) per run (--max-bytes); \(write.files) files of up to \(ByteCount.format(write.size.upperBytes)) could write more.")
            }
        }
        if let fetch = request.fetch {
            if let duration = fetch.durationNanos, duration > self.maxDurationNanos {
                throw .policy("This agent allows runs of at most \(DurationText.format(nanos: self.maxDurationNanos)) (--max-duration); the run asks for \(DurationText.format(nanos: duration)).")
            }
            if let rate = fetch.peakRate, rate > self.maxRate {
                throw .policy("This agent allows at most \(Int(self.maxRate)) requests per second (--max-rate); the run asks for \(rate).")
            }
        }
    }
}
