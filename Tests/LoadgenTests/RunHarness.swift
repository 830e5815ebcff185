import Foundation
@testable import LoadgenCore
@testable import LoadgenWorkloads

/// Runs requests through a ``RunController`` as an agent would, in this process (worker processes are the built
/// binary), and gives back what it emitted.
enum RunHarness {
    static func perform(_ request: RunRequest, phases: [Phase], agentID: String = "test",
                        destinations: DestinationPolicy? = nil,
                        beforeStart: (@Sendable () async -> Void)? = nil,
                        whileRunning: (@Sendable () async -> Void)? = nil,
                        afterPhase: (@Sendable (Phase) async -> Void)? = nil) async -> [WireMessage] {
        let controller = RunController(request: request, context: RunContext(
            agentID: agentID, allowedRoots: nil, workerExecutable: TestSupport.binary, destinations: destinations))
        let (commands, continuation) = AsyncStream.makeStream(of: RunCommand.self)
        let emitted = Locked<[WireMessage]>([])
        let phaseDone = Locked<Int>(0)
        let runTask = Task {
            await controller.run(commands: commands) { message in
                emitted.withLock { $0.append(message) }
                if case .phaseDone = message { phaseDone.withLock { $0 += 1 } }
            }
        }
        func answered() -> Bool {
            emitted.value.contains { if case .prepared = $0 { return true }; if case .refused = $0 { return true }; return false }
        }
        while !answered() { try? await Task.sleep(for: .milliseconds(5)) }
        if emitted.value.contains(where: { if case .refused = $0 { return true }; return false }) {
            continuation.finish()
            await runTask.value
            return emitted.value
        }
        if let beforeStart { await beforeStart() }
        for (i, phase) in phases.enumerated() {
            continuation.yield(.start(phase, atNanos: MonotonicClock.nowNanos() + 10_000_000))
            if i == 0, let whileRunning { await whileRunning() }
            while phaseDone.value < i + 1 { try? await Task.sleep(for: .milliseconds(5)) }
            if let afterPhase { await afterPhase(phase) }
        }
        continuation.yield(.finish)
        continuation.finish()
        await runTask.value
        return emitted.value
    }

    static func done(_ messages: [WireMessage], _ phase: Phase = .main) -> WireMessage.PhaseDone? {
        for case .phaseDone(let d) in messages where d.phase == phase { return d }
        return nil
    }

    /// Everything the intervals of a phase reported, merged.
    static func tally(_ messages: [WireMessage], _ phase: Phase = .main) throws -> Tally {
        var total = Tally()
        for case .interval(let i) in messages where i.phase == phase { total.merge(try i.tally()) }
        return total
    }
}
