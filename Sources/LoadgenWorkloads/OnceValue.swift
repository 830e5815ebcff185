import LoadgenCore
import Synchronization

/// A value made the first time it is asked for, once, from any thread; a failure to make it is remembered and
/// thrown to every asker.
///
/// The fetch engines' TLS contexts are these: making one loads and parses the system's trust store (about 140
/// certificates: most of the CPU a short plain-HTTP run spent before its first request), so a run makes it only
/// when something needs TLS: up front when a target is https or `--ca-file` is given (so a bad CA file is refused
/// before the run), on the first redirect to https otherwise.
final class OnceValue<Value: Sendable>: Sendable {
    private let make: @Sendable () throws(LoadgenError) -> Value
    private let slot = Mutex<Result<Value, LoadgenError>?>(nil)

    init(_ make: @escaping @Sendable () throws(LoadgenError) -> Value) {
        self.make = make
    }

    func get() throws(LoadgenError) -> Value {
        let result = self.slot.withLock { slot -> Result<Value, LoadgenError> in
            if let slot { return slot }
            let made = Result { () throws(LoadgenError) in try self.make() }
            slot = made
            return made
        }
        return try result.get()
    }

    /// Whether it has been made (or tried).
    var isMade: Bool { self.slot.withLock { $0 != nil } }
}
