import Testing
@testable import LoadgenAgent

/// The control port's admission rules as values: per-address and global caps, sshd-style random early drop, and
/// the bounded table of failed handshakes.
struct ConnectionGateTests {
    @Test func oneAddressGetsItsShareAndNoMore() {
        var gate = ConnectionGate(limits: .init(perAddress: 3, start: 100, rate: 0.3, full: 200))
        for _ in 0..<3 { #expect(gate.admit("10.0.0.1", draw: 0.99) == nil) }
        #expect(gate.admit("10.0.0.1", draw: 0.99) == .addressFull(3))
        #expect(gate.admit("10.0.0.2", draw: 0.99) == nil)
        #expect(gate.total == 4)
        gate.release("10.0.0.1")
        #expect(gate.admit("10.0.0.1", draw: 0.99) == nil)
        // Releasing what was never admitted changes nothing.
        gate.release("10.9.9.9")
        #expect(gate.total == 4)
        for _ in 0..<3 { gate.release("10.0.0.1") }
        #expect(gate.perAddress["10.0.0.1"] == nil, "an address with nothing pending is forgotten")
    }

    @Test func earlyDropRisesLinearlyFromStartToFull() {
        let gate = ConnectionGate(limits: .init(perAddress: 100, start: 10, rate: 0.3, full: 20))
        #expect(gate.dropProbability(pending: 9) == 0)
        #expect(gate.dropProbability(pending: 10) == 0.3)
        #expect(abs(gate.dropProbability(pending: 15) - 0.65) < 1e-12)
        #expect(gate.dropProbability(pending: 20) == 1)
        var g = gate
        for i in 0..<10 { #expect(g.admit("a\(i)", draw: 0.0) == nil) }
        // At 10 pending, a draw under 0.3 is dropped, one over is admitted.
        #expect(g.admit("b", draw: 0.29) == .earlyDrop(pending: 10))
        #expect(g.admit("b", draw: 0.31) == nil)
        for i in 0..<9 { _ = g.admit("c\(i)", draw: 0.999_999) }
        #expect(g.total == 20)
        #expect(g.admit("d", draw: 0.999_999) == .full(20))
    }

    @Test func failuresExpireAndTheTableStaysBounded() {
        var table = FailureTable(limit: 3, windowNanos: 1_000, maxEntries: 4)
        for t: UInt64 in [0, 10, 20] { table.recordFailure("x", nowNanos: t) }
        let blocked = table.isBlocked("x", nowNanos: 30)
        #expect(blocked)
        // The window slides: after the first failure leaves it, two are left and the source is let in again.
        let slid = table.isBlocked("x", nowNanos: 1_005)
        #expect(!slid)
        #expect(table.failures["x"] == [10, 20])
        let later = table.isBlocked("x", nowNanos: 5_000)
        #expect(!later)
        #expect(table.failures["x"] == nil, "a source with no failures left in its window is forgotten")

        // Never more than `limit` times kept per source, however many failures.
        for t in 0..<50 { table.recordFailure("y", nowNanos: UInt64(6_000 + t)) }
        #expect(table.failures["y"]?.count == 3)

        // Many sources: expired ones go first, then the ones whose last failure is oldest.
        for (i, t) in [7_000, 7_100, 7_200, 7_300].enumerated() { table.recordFailure("s\(i)", nowNanos: UInt64(t)) }
        #expect(table.failures.count <= 4)
        #expect(table.failures["y"] == nil, "y's failures (at 6,000-6,049) had expired by 7,300 and were evicted")
        table.recordFailure("s4", nowNanos: 7_400)
        #expect(table.failures.count == 4)
        #expect(table.failures["s0"] == nil, "the oldest went")
        #expect(table.failures["s4"] != nil)
    }
}
