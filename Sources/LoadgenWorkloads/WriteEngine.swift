import CLoadgen
import Glibc
import LoadgenCore

/// The small-file write workload: the main phase creates a share of the run's files, the stat and read phases (with
/// `--phases`) check them, the cleanup phase removes them.
///
/// The per-file loop makes the same system calls the C limit (`../shared/bench/cwrite.c`) makes (open with
/// O_CREAT, write, close) relative to the run directory's descriptor, with one monotonic clock read on each side.
/// Names and sizes are computed from the file's index (``FileNamer``), content comes from one shared buffer, and
/// the worker's tally is its own until the next tick: no allocation, lock or extra system call per file.
public final class WriteEngine: WorkloadEngine {
    public let spec: WriteSpec
    public let directory: RunDirectory
    public let namer: FileNamer
    /// Whose files stat and read act on: this agent's (``namer``), or with `--shift` its neighbour's.
    public let checkNamer: FileNamer
    /// URL-safe text the files' contents are cut from (at most 1 MiB; longer files repeat it). Filled in `init`
    /// and only read after, by every worker: safe to share.
    nonisolated(unsafe) let content: UnsafeMutableRawBufferPointer
    /// Where each worker's create stopped (keyed by its share's first index; exclusive): under `--stonewall` the
    /// later phases act on exactly the files each worker made, not on its whole share.
    let createdEnd = Locked<[UInt64: UInt64]>([:])
    /// `--rate`: nanoseconds between one worker's files (each worker paces its own share at rate / workers).
    let pacingNanos: Double?

    /// `seed` is the agent's (``FileNamer/agentSeed(runSeed:agentID:)``); `runSeed`, the run's, lets a shared
    /// target's agents write the same content and find their neighbour's names (`--shift`).
    public init(spec: WriteSpec, directory: RunDirectory, seed: UInt64, workers: Int = 1, runSeed: UInt64? = nil) {
        self.spec = spec
        self.directory = directory
        self.pacingNanos = spec.rate.map { 1e9 * Double(max(1, workers)) / $0 }
        let shared = spec.sharedToken != nil
        self.namer = FileNamer(seed: seed, size: spec.size, dirs: spec.directoryCount(workers: workers),
                               blockFiles: spec.dirPerWorker ? UInt64(spec.files) : nil, tree: spec.tree,
                               tag: shared ? spec.agentIndex ?? 0 : nil, firstDirectory: spec.firstSubdirectory(workers: workers))
        if spec.shift, let runSeed, let neighbour = spec.neighbourAgentID {
            var neighbourSpec = spec
            neighbourSpec.agentIndex = spec.neighbourIndex
            self.checkNamer = FileNamer(seed: FileNamer.agentSeed(runSeed: runSeed, agentID: neighbour), size: spec.size,
                                        dirs: spec.directoryCount(workers: workers),
                                        blockFiles: spec.dirPerWorker ? UInt64(spec.files) : nil, tree: spec.tree,
                                        tag: spec.neighbourIndex ?? 0, firstDirectory: neighbourSpec.firstSubdirectory(workers: workers))
        } else {
            self.checkNamer = self.namer
        }
        let length = Int(min(max(spec.size.upperBytes, 1), 1 << 20))
        self.content = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 4096)
        var state = (shared ? runSeed ?? seed : seed) | 1
        for i in 0..<length {
            state = FileNamer.mix(state)
            self.content[i] = FileNamer.alphabet[Int(state & 63)]
        }
    }

    deinit {
        self.content.deallocate()
    }

    public func totalOperations(phase: Phase) -> UInt64? {
        phase == .mkdir ? UInt64(self.spec.tree?.nodes ?? 0) : UInt64(self.spec.files)
    }

    /// Files: contiguous shares. The tree: whole top-level subtrees (contiguous in preorder), so every directory's
    /// parent is the worker's own or the run directory, and no worker waits on another.
    public func share(phase: Phase, worker: Int, of workers: Int) -> Share {
        guard phase == .mkdir, let tree = self.spec.tree else {
            return Share.of(total: self.totalOperations(phase: phase), workers: workers, worker: worker)
        }
        let subtrees = FileNamer.share(of: UInt64(tree.fanout), workers: workers, worker: worker)
        let size = UInt64(tree.subtreeNodes)
        return Share(first: subtrees.first * size, count: subtrees.count * size)
    }

    public func runWorker(share: Share, phase: Phase, control: WorkerControl, sink: any TallySink) -> WorkerResult {
        switch phase {
        case .main: self.create(share: share, control: control, sink: sink)
        case .stat: self.check(share: share, control: control, sink: sink, reading: false)
        case .read: self.check(share: share, control: control, sink: sink, reading: true)
        case .cleanup: self.remove(share: share, control: control, sink: sink)
        case .mkdir: self.makeTree(share: share, control: control, sink: sink)
        }
    }

    /// After the main phase: one `syncfs` when `--fsync end`; after cleanup: the emptied subdirectories go.
    public func finishPhase(_ phase: Phase) -> String? {
        switch phase {
        case .main:
            guard self.spec.fsync == .end else { return nil }
            let result = lg_syncfs(self.directory.descriptor)
            return result == 0 ? nil : "The final syncfs failed: \(errnoDescription(-result))."
        case .cleanup:
            let left = self.spec.tree == nil ? self.directory.removeSubdirectories() : self.removeTree()
            return left == 0 ? nil : "\(left) subdirectories could not be removed: they hold files this run did not create."
        case .stat, .read, .mkdir:
            return nil
        }
    }

    /// Removes the `--tree`'s directories, children before parents (reverse preorder), inside the remove phase's
    /// time; returns how many are still there (they hold what this run did not create). One already gone is fine.
    @discardableResult
    public func removeTree() -> Int {
        guard let tree = self.spec.tree else { return 0 }
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: TreeShape.maxDepth * 8)
        defer { buffer.deallocate() }
        var left = 0
        var node = tree.nodes - 1
        while node >= 0 {
            _ = tree.writeNodePath(node, into: buffer)
            let gone = buffer.withMemoryRebound(to: CChar.self, capacity: TreeShape.maxDepth * 8) {
                unlinkat(self.directory.descriptor, $0, AT_REMOVEDIR) == 0
            }
            if !gone, errno != ENOENT { left += 1 }
            node -= 1
        }
        return left
    }

    /// What a file must hold: `size` bytes, byte `p` being the content buffer's byte `p mod` its length (create
    /// writes the buffer from its start, again and again). Nil when `bytes`, read at file offset `offset`, match.
    @inline(__always)
    func differs(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) -> Bool {
        let length = UInt64(self.content.count)
        var done = 0
        while done < bytes.count {
            let at = Int((offset &+ UInt64(done)) % length)
            let n = min(bytes.count - done, self.content.count - at)
            if memcmp(bytes.baseAddress! + done, self.content.baseAddress! + at, n) != 0 { return true }
            done += n
        }
        return false
    }

    // MARK: - The hot loops

    /// The mkdir phase (`--tree`): one `mkdirat` per directory of the share, relative to the run directory's
    /// descriptor, in preorder (a parent before its children). The first failure stops the run: files need the tree.
    private func makeTree(share: Share, control: WorkerControl, sink: any TallySink) -> WorkerResult {
        guard let tree = self.spec.tree else { return WorkerResult(doneAtNanos: MonotonicClock.nowNanos()) }
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: TreeShape.maxDepth * 8)
        defer { buffer.deallocate() }
        let path = UnsafeRawPointer(buffer).assumingMemoryBound(to: CChar.self)
        let dirFD = self.directory.descriptor
        let stop = control.stop
        var failure: String?
        MonotonicClock.sleep(untilNanos: control.startAtNanos)
        var counts = TickedTally(control: control)
        var node = Int(share.first)
        let end = node + Int(share.count ?? 0)
        while node < end {
            if stop.isRequested { break }
            _ = tree.writeNodePath(node, into: buffer)
            let t0 = MonotonicClock.nowNanos()
            let result = mkdirat(dirFD, path, 0o755)
            let t1 = MonotonicClock.nowNanos()
            if result == 0 {
                counts.recordOperation(bytes: 0, latencyNanos: t1 &- t0)
            } else {
                let code = errno
                counts.tally.recordError(ErrorKind.fromErrno(code), "making \(String(cString: path)): \(errnoDescription(code))")
                failure = "The directory \(String(cString: path)) of --tree \(tree.depth):\(tree.fanout) could not be made: \(errnoDescription(code))."
                stop.request(failure!)
                break
            }
            counts.tick(t1, to: sink)
            node += 1
        }
        let done = MonotonicClock.nowNanos()
        counts.handOver(to: sink)
        return WorkerResult(doneAtNanos: done, failure: failure)
    }

    private func create(share: Share, control: WorkerControl, sink: any TallySink) -> WorkerResult {
        let pathBuffer = UnsafeMutablePointer<UInt8>.allocate(capacity: FileNamer.bufferBytes)
        defer { pathBuffer.deallocate() }
        let path = UnsafeRawPointer(pathBuffer).assumingMemoryBound(to: CChar.self)
        let alphabet = FileNamer.alphabet
        let namer = self.namer
        let dirFD = self.directory.descriptor
        let content = UnsafeRawPointer(self.content.baseAddress!)
        let contentLength = UInt64(self.content.count)
        let fsyncEach = self.spec.fsync == .each
        let stop = control.stop
        var failure: String?
        let stonewall = self.spec.stonewallNanos.map { control.startAtNanos &+ $0 } ?? UInt64.max

        MonotonicClock.sleep(untilNanos: control.startAtNanos)
        var counts = TickedTally(control: control)
        var index = share.first
        let end = share.first + (share.count ?? 0)
        var last = control.startAtNanos
        defer { self.createdEnd.withLock { $0[share.first] = index } }
        let pacing = self.pacingNanos
        while index < end {
            if stop.isRequested { break }
            // The stonewall, against the clock read at the last file's end: no extra read per file.
            if last >= stonewall { break }
            // --rate: the file is due at its place in the worker's schedule; wait for it, or start at once when
            // late, its latency counting from the due time either way (the open model).
            var due: UInt64?
            if let pacing {
                let at = control.startAtNanos &+ UInt64(Double(index &- share.first) * pacing)
                if at >= stonewall { break }
                var now = MonotonicClock.nowNanos()
                while at > now, !stop.isRequested {
                    MonotonicClock.sleep(untilNanos: min(at, now &+ 100_000_000))
                    now = MonotonicClock.nowNanos()
                }
                if stop.isRequested { break }
                if now >= stonewall { break }
                counts.recordLag(ScheduleLag(nanos: now &- at))
                due = at
            }
            _ = namer.writePath(of: index, into: pathBuffer, alphabet: alphabet)
            let size = namer.sizeBytes(of: index)
            let t0 = due ?? MonotonicClock.nowNanos()
            var errorCode: Int32 = 0
            let fd = lg_create_file(dirFD, path, 1)
            if fd >= 0 {
                var remaining = size
                while remaining > 0, errorCode == 0 {
                    let chunk = remaining < contentLength ? remaining : contentLength
                    let result = lg_write_all(fd, content, chunk)
                    if result < 0 { errorCode = -result }
                    remaining -= chunk
                }
                if errorCode == 0, fsyncEach, fsync(fd) != 0 { errorCode = errno }
                if close(fd) != 0, errorCode == 0, errno != EINTR { errorCode = errno }
                if errorCode != 0 {
                    // The file exists but is not what was asked for: remove it, so files on disk == files counted.
                    unlinkat(dirFD, path, 0)
                }
            } else {
                errorCode = -fd
            }
            let t1 = MonotonicClock.nowNanos()
            last = t1
            if errorCode == 0 {
                counts.recordOperation(bytes: size, latencyNanos: t1 &- t0)
            } else {
                let kind = ErrorKind.fromErrno(errorCode)
                counts.tally.recordError(kind, "creating \(String(cString: path)): \(errnoDescription(errorCode))")
                if kind.endsWriteRun {
                    failure = Self.fullMessage(kind, code: errorCode)
                    stop.request(failure!)
                    break
                }
            }
            counts.tick(t1, to: sink)
            index &+= 1
        }
        let done = MonotonicClock.nowNanos()
        counts.handOver(to: sink)
        return WorkerResult(doneAtNanos: done, failure: failure)
    }

    /// The stat phase (`fstatat`, the size checked) or the read phase (open, read to the end, close; the byte count
    /// checked, and every byte with `--verify`), relative to the run directory's descriptor as create's calls are.
    /// A file that is missing (removed behind the run's back) counts as ENOENT; one of the wrong size or content as
    /// `mismatch`.
    private func check(share: Share, control: WorkerControl, sink: any TallySink, reading: Bool) -> WorkerResult {
        let pathBuffer = UnsafeMutablePointer<UInt8>.allocate(capacity: FileNamer.bufferBytes)
        defer { pathBuffer.deallocate() }
        let path = UnsafeRawPointer(pathBuffer).assumingMemoryBound(to: CChar.self)
        let bufferBytes = 64 * 1024
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bufferBytes, alignment: 4096)
        defer { buffer.deallocate() }
        let alphabet = FileNamer.alphabet
        let namer = self.checkNamer
        let dirFD = self.directory.descriptor
        let verify = self.spec.verify
        let stop = control.stop
        let verb = reading ? "reading" : "stat'ing"

        MonotonicClock.sleep(untilNanos: control.startAtNanos)
        var counts = TickedTally(control: control)
        var index = share.first
        let end = self.end(of: share)
        var st = stat()
        while index < end {
            if stop.isRequested { break }
            _ = namer.writePath(of: index, into: pathBuffer, alphabet: alphabet)
            let size = namer.sizeBytes(of: index)
            var errorCode: Int32 = 0
            var got: UInt64 = 0
            var wrong = false
            let t0 = MonotonicClock.nowNanos()
            if reading {
                let fd = openat(dirFD, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
                if fd >= 0 {
                    while true {
                        let n = Glibc.read(fd, buffer, bufferBytes)
                        if n > 0 {
                            if verify, !wrong, self.differs(UnsafeRawBufferPointer(start: buffer, count: n), at: got) { wrong = true }
                            got &+= UInt64(n)
                        } else if n == 0 {
                            break
                        } else if errno != EINTR {
                            errorCode = errno
                            break
                        }
                    }
                    close(fd)
                } else {
                    errorCode = errno
                }
            } else if fstatat(dirFD, path, &st, AT_SYMLINK_NOFOLLOW) == 0 {
                got = UInt64(st.st_size)
            } else {
                errorCode = errno
            }
            let t1 = MonotonicClock.nowNanos()
            if errorCode != 0 {
                counts.tally.recordError(ErrorKind.fromErrno(errorCode), "\(verb) \(String(cString: path)): \(errnoDescription(errorCode))")
            } else if got != size {
                counts.tally.recordError(.mismatch, "\(String(cString: path)) holds \(got) bytes; create wrote \(size)")
            } else if wrong {
                counts.tally.recordError(.mismatch, "\(String(cString: path)) does not hold the bytes create wrote")
            } else {
                counts.recordOperation(bytes: reading ? got : 0, latencyNanos: t1 &- t0)
            }
            counts.tick(t1, to: sink)
            index &+= 1
        }
        let done = MonotonicClock.nowNanos()
        counts.handOver(to: sink)
        return WorkerResult(doneAtNanos: done)
    }

    private func remove(share: Share, control: WorkerControl, sink: any TallySink) -> WorkerResult {
        let pathBuffer = UnsafeMutablePointer<UInt8>.allocate(capacity: FileNamer.bufferBytes)
        defer { pathBuffer.deallocate() }
        let path = UnsafeRawPointer(pathBuffer).assumingMemoryBound(to: CChar.self)
        let alphabet = FileNamer.alphabet
        let namer = self.namer
        let dirFD = self.directory.descriptor
        let stop = control.stop

        MonotonicClock.sleep(untilNanos: control.startAtNanos)
        var counts = TickedTally(control: control)
        var index = share.first
        let end = self.end(of: share)
        while index < end {
            if stop.isRequested { break }
            _ = namer.writePath(of: index, into: pathBuffer, alphabet: alphabet)
            let t0 = MonotonicClock.nowNanos()
            let result = unlinkat(dirFD, path, 0)
            let t1 = MonotonicClock.nowNanos()
            if result == 0 {
                counts.recordOperation(bytes: namer.sizeBytes(of: index), latencyNanos: t1 &- t0)
            } else {
                let code = errno
                // A file whose creation failed was never there: nothing to remove, nothing to count.
                if code != ENOENT {
                    counts.tally.recordError(ErrorKind.fromErrno(code), "removing \(String(cString: path)): \(errnoDescription(code))")
                }
            }
            counts.tick(t1, to: sink)
            index &+= 1
        }
        let done = MonotonicClock.nowNanos()
        counts.handOver(to: sink)
        return WorkerResult(doneAtNanos: done)
    }

    /// Where a later phase's share ends: where that worker's create stopped, when it ran here (a stonewall, a stop),
    /// else the whole share.
    func end(of share: Share) -> UInt64 {
        let whole = share.first + (share.count ?? 0)
        // The neighbour's files (--shift, which has no stonewall): its whole share of them.
        if self.spec.shift { return whole }
        return min(whole, self.createdEnd.withLock { $0[share.first] } ?? whole)
    }

    static func fullMessage(_ kind: ErrorKind, code: Int32) -> String {
        switch kind {
        case .noSpace: "The file system is full (ENOSPC): \(errnoDescription(code))."
        case .quota: "The disk quota is exhausted (EDQUOT): \(errnoDescription(code))."
        case .readOnlyFileSystem: "The file system became read-only (EROFS)."
        default: "Writing stopped: \(errnoDescription(code))."
        }
    }
}
