import LoadgenCore

/// Who may start a handshake on the control port, decided before anything is read from the connection.
///
/// Three limits on connections that have not authenticated yet (*pending* ones), so that one source holding
/// hundreds of silent connections cannot lock out a coordinator connecting from elsewhere:
/// - a cap per source address (``Limits/perAddress``);
/// - random early drop as the total nears its cap, as sshd's `MaxStartups start:rate:full`: from `start` pending
///   connections a new one is refused with probability `rate`, rising linearly to 1 at `full`;
/// - the global cap, `full`.
/// A pure value: the server keeps it under a lock and passes the random draw in, so tests pick the draws.
public struct ConnectionGate: Sendable {
    public struct Limits: Sendable, Equatable {
        public var perAddress: Int
        public var start: Int
        public var rate: Double
        public var full: Int

        public init(perAddress: Int = 8, start: Int = 16, rate: Double = 0.3, full: Int = 32) {
            self.perAddress = perAddress
            self.start = start
            self.rate = rate
            self.full = full
        }
    }

    public enum Refusal: Sendable, Equatable {
        /// This address already has `perAddress` connections in their handshake.
        case addressFull(Int)
        /// The global cap.
        case full(Int)
        /// Dropped at random, `pending` connections being in their handshake (between `start` and `full`).
        case earlyDrop(pending: Int)
    }

    public let limits: Limits
    public private(set) var total = 0
    public private(set) var perAddress: [String: Int] = [:]

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// The chance that a new connection is dropped with `pending` connections already in their handshake.
    public func dropProbability(pending: Int) -> Double {
        if pending >= self.limits.full { return 1 }
        guard pending >= self.limits.start, self.limits.full > self.limits.start else { return 0 }
        let span = Double(self.limits.full - self.limits.start)
        return self.limits.rate + (1 - self.limits.rate) * Double(pending - self.limits.start) / span
    }

    /// Admits a new connection from `address` (counted as pending until ``release(_:)``), or says why not.
    /// `draw` is a uniform random number in [0, 1).
    public mutating func admit(_ address: String, draw: Double) -> Refusal? {
        let mine = self.perAddress[address] ?? 0
        if mine >= self.limits.perAddress { return .addressFull(self.limits.perAddress) }
        if self.total >= self.limits.full { return .full(self.limits.full) }
        if draw < self.dropProbability(pending: self.total) { return .earlyDrop(pending: self.total) }
        self.total += 1
        self.perAddress[address] = mine + 1
        return nil
    }

    /// A connection admitted from `address` authenticated or ended.
    public mutating func release(_ address: String) {
        guard let mine = self.perAddress[address], mine > 0 else { return }
        self.total -= 1
        if mine == 1 {
            self.perAddress.removeValue(forKey: address)
        } else {
            self.perAddress[address] = mine - 1
        }
    }
}

/// Slows brute force: a source with `limit` failed handshakes within the window is refused at once. Bounded: a
/// source's failures older than the window are dropped whenever it is looked at, sources with none left are evicted
/// as the table grows, and past `maxEntries` the sources whose last failure is oldest go first.
public struct FailureTable: Sendable {
    public let limit: Int
    public let windowNanos: UInt64
    public let maxEntries: Int
    /// Per source, the times of its failures within the window, oldest first (at most `limit` kept).
    public private(set) var failures: [String: [UInt64]] = [:]

    public init(limit: Int, windowNanos: UInt64, maxEntries: Int = 4096) {
        self.limit = limit
        self.windowNanos = windowNanos
        self.maxEntries = maxEntries
    }

    public mutating func recordFailure(_ host: String, nowNanos now: UInt64) {
        var recent = (self.failures[host] ?? []).filter { now &- $0 < self.windowNanos }
        recent.append(now)
        // Only the newest `limit` matter to the verdict.
        if recent.count > self.limit { recent.removeFirst(recent.count - self.limit) }
        self.failures[host] = recent
        if self.failures.count > self.maxEntries {
            self.failures = self.failures.filter { now &- ($0.value.last ?? 0) < self.windowNanos }
        }
        if self.failures.count > self.maxEntries {
            let excess = self.failures.count - self.maxEntries
            let oldest = self.failures.sorted { ($0.value.last ?? 0) < ($1.value.last ?? 0) }.prefix(excess).map(\.key)
            for key in oldest { self.failures.removeValue(forKey: key) }
        }
    }

    /// Whether `host` is refused now; forgets its failures that have left the window.
    public mutating func isBlocked(_ host: String, nowNanos now: UInt64) -> Bool {
        guard let times = self.failures[host] else { return false }
        let recent = times.filter { now &- $0 < self.windowNanos }
        if recent.isEmpty {
            self.failures.removeValue(forKey: host)
        } else if recent.count != times.count {
            self.failures[host] = recent
        }
        return recent.count >= self.limit
    }
}
