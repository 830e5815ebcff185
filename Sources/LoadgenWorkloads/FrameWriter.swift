import CLoadgen
import LoadgenCore
import Synchronization

/// Writes whole frames to a blocking file descriptor (a worker process's stdout), one writer at a time.
public final class FrameWriter: Sendable {
    private let fd: Int32
    private let lock = Mutex<Bool>(true)

    public init(fd: Int32) {
        self.fd = fd
    }

    /// Writes one message; false once the reader has gone (EPIPE) or the message cannot be encoded.
    @discardableResult
    public func write(_ message: WireMessage) -> Bool {
        guard let frame = try? FrameCodec.encode(message) else { return false }
        return self.lock.withLock { open in
            guard open else { return false }
            let ok = frame.withUnsafeBytes { lg_write_all(self.fd, $0.baseAddress!, UInt64($0.count)) == 0 }
            if !ok { open = false }
            return ok
        }
    }
}

