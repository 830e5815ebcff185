import CLoadgen
import Foundation
import Synchronization

/// Dedicated OS threads for blocking work. File I/O blocks, so it never runs on the Swift cooperative pool (two
/// threads here) or on an event loop: each worker gets a thread of its own for the phase.
public enum WorkerThreads {
    /// Runs `body(i)` for `i` in `0..<count`, each on its own new thread, and returns the results in order once
    /// every thread has finished.
    public static func run<Result: Sendable>(count: Int, name: String, stackBytes: Int = 1 << 20,
                                             _ body: @escaping @Sendable (Int) -> Result) async -> [Result] {
        guard count > 0 else { return [] }
        let state = Mutex<(results: [Result?], remaining: Int)>((Array(repeating: nil, count: count), count))
        return await withCheckedContinuation { (continuation: CheckedContinuation<[Result], Never>) in
            for index in 0..<count {
                let thread = Thread {
                    lg_set_thread_name("\(name)-\(index)")
                    let result = body(index)
                    let finished: [Result]? = state.withLock { state in
                        state.results[index] = result
                        state.remaining -= 1
                        return state.remaining == 0 ? state.results.map { $0! } : nil
                    }
                    if let finished { continuation.resume(returning: finished) }
                }
                thread.stackSize = stackBytes
                thread.start()
            }
        }
    }
}
