import Synchronization

/// A value behind a mutex, as a class so tasks can share it by reference.
public final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    public init(_ value: Value) {
        self.mutex = Mutex(value)
    }

    public func withLock<Result: Sendable>(_ body: (inout Value) -> Result) -> Result {
        self.mutex.withLock { value in body(&value) }
    }

    public var value: Value { self.mutex.withLock { $0 } }
}
