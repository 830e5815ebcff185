import CLoadgen
import Glibc
import LoadgenCore

/// `async` mode for writes: io_uring. `workers` files are in flight on one thread; each file is a linked chain
/// (open into a registered "direct" slot, write, optional fsync, close) submitted and reaped in batches, so the
/// thread makes one system call per batch rather than three or four per file. The stat phase is one statx per file,
/// the read phase a chain (open read-only, reads, a read past the end that must find nothing, close), the remove
/// phase one unlinkat.
///
/// Latency runs from a file's submission to its close completing. An open that fails cancels the rest of its chain
/// and counts once, by its errno; a write that fails still closes the slot (hard link) and the partial file is
/// removed, so files on disk are exactly the files counted.
public final class AsyncWriteExecutor: PhaseExecutor {
    let engine: WriteEngine
    let depth: Int

    public init(engine: WriteEngine, depth: Int) {
        self.engine = engine
        self.depth = depth
    }

    /// Checks that io_uring and the operations it needs are there, naming what is missing otherwise.
    public static func probe() throws(LoadgenError) {
        var ring: OpaquePointer?
        var why: UnsafePointer<CChar>?
        let rc = lg_ring_create(&ring, 8, 1, &why)
        guard rc == 0 else {
            throw .unsupported("The async mode for writes needs io_uring, which is unavailable here: \(String(cString: why!)) (\(errnoDescription(-rc))).")
        }
        lg_ring_destroy(ring)
    }

    /// The largest file the async read phase verifies: `--verify` reads each file whole into its slot's buffer.
    public static let maxVerifiedBytes: UInt64 = 1 << 20

    public func runPhase(_ phase: Phase, control: WorkerControl, mailbox: TallyMailbox) async -> [WorkerResult] {
        let engine = self.engine
        let depth = self.depth
        if phase == .mkdir {
            // The tree is made with plain mkdirat on the ring's one thread, in preorder: each directory waits on its
            // parent, so a ring would hold at most one level's siblings, and the tree is small beside its files.
            return await WorkerThreads.run(count: 1, name: "lg-mkdir") { _ in
                engine.runWorker(share: engine.share(phase: .mkdir, worker: 0, of: 1), phase: .mkdir, control: control, sink: mailbox)
            }
        }
        return await WorkerThreads.run(count: 1, name: "lg-ring-\(phase.rawValue)") { _ in
            RingWorker(engine: engine, depth: depth, phase: phase, control: control, sink: mailbox).run()
        }
    }
}

/// The ring thread's state: slots of files in flight, and the tally it hands over at each tick.
private struct RingWorker {
    let engine: WriteEngine
    let depth: Int
    let phase: Phase
    let control: WorkerControl
    let sink: any TallySink

    struct Slot {
        var index: UInt64 = 0
        var size: UInt64 = 0
        var start: UInt64 = 0
        var expected: Int = 0
        var received: Int = 0
        var error: Int32 = 0
        /// Bytes written (create) or read (read).
        var written: UInt64 = 0
        /// The read past the expected end found more: the file is larger than create made it.
        var longer = false
    }

    /// Bytes per write: the engine's content buffer, which every write reads from.
    var piece: UInt64 { UInt64(self.engine.content.count) }

    func run() -> WorkerResult {
        let dirFD = self.engine.directory.descriptor
        let namer = phase == .stat || phase == .read ? self.engine.checkNamer : self.engine.namer
        let alphabet = FileNamer.alphabet
        let phase = self.phase
        // The ring makes every file, in order: after create, the later phases take what it reached.
        let files = phase == .main ? UInt64(self.engine.spec.files) : self.engine.end(of: Share(first: 0, count: UInt64(self.engine.spec.files)))
        let stonewall = phase == .main ? self.engine.spec.stonewallNanos.map { self.control.startAtNanos &+ $0 } ?? UInt64.max : UInt64.max
        let create = phase == .main
        let fsyncEach = self.engine.spec.fsync == .each
        let verify = self.engine.spec.verify
        let chain = 3 + Int(min((self.engine.spec.size.upperBytes + self.piece - 1) / max(self.piece, 1), 250)) + (fsyncEach ? 1 : 0)
        var entries: UInt32 = 8
        while entries < UInt32(self.depth * chain) && entries < 32768 { entries <<= 1 }

        var ring: OpaquePointer?
        var why: UnsafePointer<CChar>?
        let created = lg_ring_create(&ring, entries, UInt32(self.depth), &why)
        guard created == 0, let ring else {
            return WorkerResult(doneAtNanos: MonotonicClock.nowNanos(),
                                failure: "io_uring could not be set up: \(why.map { String(cString: $0) } ?? "") (\(errnoDescription(-created))).")
        }
        defer { lg_ring_destroy(ring) }

        let paths = UnsafeMutablePointer<UInt8>.allocate(capacity: self.depth * FileNamer.bufferBytes)
        defer { paths.deallocate() }
        // Where the kernel writes: a struct statx per slot (stat); for reads, one scratch piece all slots share
        // (its bytes are not looked at), or with --verify a whole file's room per slot.
        let statxBytes = lg_statx_bytes()
        let readRoom = verify ? Int(self.engine.spec.size.upperBytes) + 1 : Int(self.piece)
        let landing = UnsafeMutableRawPointer.allocate(
            byteCount: phase == .stat ? self.depth * statxBytes : (phase == .read ? (verify ? self.depth : 1) * readRoom : 1),
            alignment: 64)
        defer { landing.deallocate() }
        func area(_ slot: Int) -> UnsafeMutableRawPointer {
            switch phase {
            case .stat: landing + slot * statxBytes
            case .read: verify ? landing + slot * readRoom : landing
            default: landing
            }
        }
        func path(_ slot: Int) -> UnsafeMutablePointer<UInt8> { paths + slot * FileNamer.bufferBytes }
        var slots = [Slot](repeating: Slot(), count: self.depth)
        var free = Array((0..<self.depth).reversed())
        let reapMax = 1024
        var tags = [UInt64](repeating: 0, count: reapMax)
        var results = [Int32](repeating: 0, count: reapMax)
        var failure: String?
        var next: UInt64 = 0
        var inFlight = 0
        let content = UnsafeRawPointer(self.engine.content.baseAddress!)

        MonotonicClock.sleep(untilNanos: self.control.startAtNanos)
        var counts = TickedTally(control: self.control)
        var lastReap = self.control.startAtNanos
        defer { if phase == .main { self.engine.createdEnd.withLock { $0[0] = next } } }
        while true {
            // Fill every free slot with the next file's chain (none past the stonewall).
            while !self.control.stop.isRequested, next < files, lastReap < stonewall, let slot = free.last {
                let p = path(slot)
                _ = namer.writePath(of: next, into: p, alphabet: alphabet)
                let cPath = UnsafeRawPointer(p).assumingMemoryBound(to: CChar.self)
                let tag = UInt64(slot) << 8
                let size = namer.sizeBytes(of: next)
                let start = MonotonicClock.nowNanos()
                let queued: Int32
                switch phase {
                case .main: queued = lg_ring_queue_create(ring, dirFD, cPath, UInt32(slot), content, size, self.piece, fsyncEach ? 1 : 0, tag)
                case .stat: queued = lg_ring_queue_statx(ring, dirFD, cPath, area(slot), tag)
                case .read: queued = lg_ring_queue_read(ring, dirFD, cPath, UInt32(slot), area(slot), verify ? 1 : 0, size, self.piece, tag)
                case .cleanup: queued = lg_ring_queue_unlink(ring, dirFD, cPath, tag)
                case .mkdir: queued = -EINVAL  // made by runPhase, not the ring
                }
                if queued == -EBUSY { break }
                free.removeLast()
                slots[slot] = Slot(index: next, size: size, start: start, expected: Int(max(queued, 0)), received: 0,
                                   error: queued < 0 ? -queued : 0, written: 0)
                next &+= 1
                if queued < 0 {
                    // Never queued (a size beyond the chain's limit): count it and free the slot.
                    counts.tally.recordError(ErrorKind.fromErrno(-queued), "queuing \(String(cString: cPath)): \(errnoDescription(-queued))")
                    free.append(slot)
                    continue
                }
                inFlight += 1
            }
            if inFlight == 0 { break }
            let submitted = lg_ring_submit(ring, 1)
            if submitted < 0 {
                failure = "io_uring submission failed: \(errnoDescription(-submitted))."
                self.control.stop.request(failure!)
                break
            }
            let count = Int(tags.withUnsafeMutableBufferPointer { t in
                results.withUnsafeMutableBufferPointer { r in lg_ring_reap(ring, t.baseAddress, r.baseAddress, UInt32(reapMax)) }
            })
            let now = MonotonicClock.nowNanos()
            lastReap = now
            for i in 0..<count {
                let slot = Int(tags[i] >> 8)
                let step = Int(tags[i] & 0xff)
                let result = results[i]
                if create || phase == .read {
                    switch step {
                    case 0:
                        if result < 0 { slots[slot].error = -result }
                    case 255:
                        if result < 0, result != -EBADF, slots[slot].error == 0 { slots[slot].error = -result }
                    case 253 where phase == .read:
                        if result > 0 { slots[slot].longer = true }
                    default:
                        if result < 0 {
                            if slots[slot].error == 0, result != -ECANCELED { slots[slot].error = -result }
                        } else if step != 254 {
                            slots[slot].written &+= UInt64(result)
                        }
                    }
                } else if result < 0, result != -ENOENT {
                    slots[slot].error = -result
                } else if result == -ENOENT {
                    slots[slot].error = ENOENT
                }
                slots[slot].received += 1
                guard slots[slot].received >= slots[slot].expected else { continue }
                // The file's chain is complete.
                let s = slots[slot]
                free.append(slot)
                inFlight -= 1
                if create {
                    var code = s.error
                    if code == 0, s.written != s.size { code = EIO }
                    if code == 0 {
                        counts.recordOperation(bytes: s.size, latencyNanos: now &- s.start)
                    } else {
                        let p = UnsafeRawPointer(path(slot)).assumingMemoryBound(to: CChar.self)
                        _ = namer.writePath(of: s.index, into: path(slot), alphabet: alphabet)
                        // The open may have made the file before a later step failed: remove what is not counted.
                        unlinkat(dirFD, p, 0)
                        let kind = ErrorKind.fromErrno(code)
                        counts.tally.recordError(kind, "creating \(String(cString: p)): \(errnoDescription(code))")
                        if kind.endsWriteRun, failure == nil {
                            failure = WriteEngine.fullMessage(kind, code: code)
                            self.control.stop.request(failure!)
                        }
                    }
                } else if phase == .stat || phase == .read {
                    let p = UnsafeRawPointer(path(slot)).assumingMemoryBound(to: CChar.self)
                    let got = phase == .stat ? lg_statx_size(area(slot)) : s.written
                    if s.error != 0 {
                        let verb = phase == .stat ? "stat'ing" : "reading"
                        counts.tally.recordError(ErrorKind.fromErrno(s.error), "\(verb) \(String(cString: p)): \(errnoDescription(s.error))")
                    } else if got != s.size || s.longer {
                        counts.tally.recordError(.mismatch, "\(String(cString: p)) holds \(s.longer ? "more than \(s.size)" : String(got)) bytes; create wrote \(s.size)")
                    } else if verify, phase == .read,
                              self.engine.differs(UnsafeRawBufferPointer(start: area(slot), count: Int(s.size)), at: 0) {
                        counts.tally.recordError(.mismatch, "\(String(cString: p)) does not hold the bytes create wrote")
                    } else {
                        counts.recordOperation(bytes: phase == .read ? got : 0, latencyNanos: now &- s.start)
                    }
                } else if s.error == 0 {
                    counts.recordOperation(bytes: namer.sizeBytes(of: s.index), latencyNanos: now &- s.start)
                } else if s.error != ENOENT {
                    let p = UnsafeRawPointer(path(slot)).assumingMemoryBound(to: CChar.self)
                    counts.tally.recordError(ErrorKind.fromErrno(s.error), "removing \(String(cString: p)): \(errnoDescription(s.error))")
                }
            }
            counts.tick(now, to: self.sink)
        }
        let done = MonotonicClock.nowNanos()
        counts.handOver(to: self.sink)
        return WorkerResult(doneAtNanos: done, failure: failure)
    }
}
