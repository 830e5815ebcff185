import CLoadgen

/// The clocks loadgen measures with.
///
/// Every duration and latency comes from `CLOCK_MONOTONIC`: it never jumps when the wall clock is set, and all
/// processes of one host share it, so a worker process and its parent agent compare instants directly. Wall time
/// is read only to stamp records and to estimate an agent's clock offset.
public enum MonotonicClock {
    /// Nanoseconds on `CLOCK_MONOTONIC`.
    @inline(__always)
    public static func nowNanos() -> UInt64 { lg_monotonic_ns() }

    /// Nanoseconds since the Unix epoch on `CLOCK_REALTIME`.
    public static func wallNanos() -> UInt64 { lg_wall_ns() }

    /// Blocks the calling thread until the monotonic instant `deadline`.
    public static func sleep(untilNanos deadline: UInt64) { lg_sleep_until_ns(deadline) }
}
