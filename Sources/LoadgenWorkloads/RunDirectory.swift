import CLoadgen
import Foundation
import Glibc
import LoadgenCore

/// The fresh directory a write run works in: `<target>/loadgen-<run>-<agent>`, made by this run and by nothing else.
///
/// The target is resolved to its real path and must lie under one of the allowed roots; it is then opened beneath
/// that root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so `..`, symlinks swapped in after the check,
/// and absolute paths cannot escape. The run directory is made with `mkdirat`, which fails if the name exists, so a
/// run never writes into anything it did not create, and cleanup removes only what the run made.
public final class RunDirectory: Sendable {
    /// The run directory's absolute path.
    public let path: String
    /// An open descriptor of the run directory; every file operation is relative to it.
    public let descriptor: Int32
    /// The numbers of the subdirectories this run (agent) made: `d<number>` each.
    public let subdirectories: Range<Int>
    /// This object made the directory and its marker (a worker's view of it did not), and `descriptor` holds the
    /// run's `flock` until it closes.
    let ownsMarker: Bool
    /// `--shared-target`: the run's agents share this directory; what is left in it may be theirs, and the last one
    /// out removes it.
    let shared: Bool

    private init(path: String, descriptor: Int32, subdirectories: Range<Int>, ownsMarker: Bool = false, shared: Bool = false) {
        self.path = path
        self.descriptor = descriptor
        self.subdirectories = subdirectories
        self.ownsMarker = ownsMarker
        self.shared = shared
    }

    deinit {
        close(self.descriptor)
    }

    /// The run directory's name for a run and an agent (agent ids are reduced to safe characters).
    public static func name(runID: String, agentID: String) -> String {
        RunMarker.directoryName(runID: runID, agentID: agentID)
    }

    /// Resolves `target` to its real path, checks it is a directory under one of `allowedRoots` (nil: anywhere), and
    /// opens it beneath that root without following a symlink or leaving it (so a link swapped in after the check
    /// cannot redirect it). Returns the real path and the open descriptor, which the caller closes.
    static func openTarget(_ target: String, allowedRoots: [String]?) throws(LoadgenError) -> (real: String, fd: Int32) {
        guard let real = realPath(target) else {
            let e = errno
            if e == ENOENT { throw .usage("The target directory '\(target)' does not exist.") }
            throw .usage("The target directory '\(target)' cannot be resolved: \(errnoDescription(e)).")
        }
        var info = stat()
        guard stat(real, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw .usage("The target '\(target)' is not a directory.")
        }
        // Pick the allowed root the target lies under (the deepest), or "/" when every path is allowed.
        var root = "/"
        if let allowedRoots {
            let realRoots = allowedRoots.compactMap { realPath($0) }
            guard let match = realRoots.filter({ isPath(real, under: $0) }).max(by: { $0.count < $1.count }) else {
                throw .policy("The target '\(target)' is outside this agent's allowed roots (\(allowedRoots.joined(separator: ", "))); start the agent with --allow-root to permit it.")
            }
            root = match
        }
        let rootFD = Glibc.open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard rootFD >= 0 else {
            throw .io("The allowed root '\(root)' cannot be opened: \(errnoDescription(errno)).")
        }
        defer { close(rootFD) }
        let relative = real == root ? "." : String(real.dropFirst(root == "/" ? 1 : root.count + 1))
        let targetFD = lg_open_directory_beneath(rootFD, relative)
        guard targetFD >= 0 else {
            throw .policy("The target '\(target)' cannot be opened beneath '\(root)' without following a symlink or leaving it: \(errnoDescription(-targetFD)).")
        }
        return (real, targetFD)
    }

    /// Makes the run directory (and `subdirectories` subdirectories when more than one) under `target`, after
    /// checking that `target` lies under an allowed root, and probes that a file can be created in it. Nothing is
    /// left behind when this throws.
    ///
    /// With `sharedBy` (`--shared-target`; the agent's id), the directory is the run's one for all its agents: the
    /// first to come makes it, the others join it, once its marker names this run (waiting a moment for the
    /// marker, which the maker writes right after the directory). Every agent holds a shared `flock`, so `loadgen
    /// clean` leaves the directory while any of them lives. The name's token, drawn by the coordinator, is what
    /// keeps anyone else from making the directory first.
    public static func create(target: String, allowedRoots: [String]?, name: String, subdirectories count: Int,
                              firstSubdirectory: Int? = nil, marker: RunMarker? = nil, sharedBy agentID: String? = nil)
        throws(LoadgenError) -> RunDirectory
    {
        let subdirectories = Self.numbers(count, first: firstSubdirectory)
        let (real, targetFD) = try Self.openTarget(target, allowedRoots: allowedRoots)
        defer { close(targetFD) }
        let shared = agentID != nil
        let marker = marker ?? RunMarker(runID: name, agentID: "", keep: false)
        let path = real == "/" ? "/\(name)" : "\(real)/\(name)"

        let made = mkdirat(targetFD, name, 0o755) == 0
        if !made, shared, errno == EEXIST {
            return try Self.join(targetFD: targetFD, name: name, path: path, marker: marker, agentID: agentID!,
                                 subdirectories: subdirectories)
        }
        guard made else {
            let e = errno
            switch e {
            case EEXIST:
                throw .usage("The run directory '\(real)/\(name)' already exists; loadgen writes only into directories it creates.")
            case EACCES, EPERM:
                throw .usage("The target directory '\(target)' cannot be written: \(errnoDescription(e)).")
            case EROFS:
                throw .usage("The target directory '\(target)' is on a read-only file system.")
            case ENOSPC, EDQUOT:
                throw .usage("The target directory '\(target)' has no space left: \(errnoDescription(e)).")
            default:
                throw .io("The run directory cannot be made in '\(target)': \(errnoDescription(e)).")
            }
        }
        let runFD = lg_open_directory_nofollow(targetFD, name)
        guard runFD >= 0 else {
            let e = errno
            unlinkat(targetFD, name, AT_REMOVEDIR)
            throw .io("The run directory '\(real)/\(name)' cannot be opened: \(errnoDescription(e)).")
        }
        do throws(LoadgenError) {
            try Self.mark(runFD, with: marker, shared: shared)
        } catch {
            unlinkat(runFD, RunMarker.fileName, 0)
            close(runFD)
            unlinkat(targetFD, name, AT_REMOVEDIR)
            throw error
        }
        let directory = RunDirectory(path: path, descriptor: runFD, subdirectories: subdirectories, ownsMarker: true, shared: shared)
        do throws(LoadgenError) {
            try directory.probe(agentID: agentID)
            try directory.makeSubdirectories()
        } catch {
            directory.removeSubdirectories()
            unlinkat(runFD, RunMarker.fileName, 0)
            unlinkat(targetFD, name, AT_REMOVEDIR)
            throw error
        }
        return directory
    }

    /// Joins the shared run directory another agent of the run made: it must be a directory (not a link), and its
    /// marker must name this run. Nothing of the directory is removed when this throws: it is the other agent's.
    private static func join(targetFD: Int32, name: String, path: String, marker: RunMarker, agentID: String,
                             subdirectories: Range<Int>) throws(LoadgenError) -> RunDirectory
    {
        let runFD = lg_open_directory_nofollow(targetFD, name)
        guard runFD >= 0 else {
            throw .usage("The shared run directory '\(path)' exists but cannot be opened as a directory: \(errnoDescription(errno)).")
        }
        // The maker writes the marker right after making the directory: give it a moment.
        var found = RunCleaner.readMarker(runFD)
        let deadline = MonotonicClock.nowNanos() &+ 5_000_000_000
        while found == nil, MonotonicClock.nowNanos() < deadline {
            MonotonicClock.sleep(untilNanos: MonotonicClock.nowNanos() &+ 10_000_000)
            found = RunCleaner.readMarker(runFD)
        }
        guard let found, found.runID == marker.runID else {
            close(runFD)
            throw .usage("The directory '\(path)' exists but is not run \(marker.runID)'s shared directory; loadgen writes only into directories its runs create.")
        }
        if flock(runFD, LOCK_SH | LOCK_NB) != 0, errno == EWOULDBLOCK {
            close(runFD)
            throw .io("The shared run directory '\(path)' is locked by someone else.")
        }
        let directory = RunDirectory(path: path, descriptor: runFD, subdirectories: subdirectories, ownsMarker: true, shared: true)
        try directory.probe(agentID: agentID)
        try directory.makeSubdirectories()
        return directory
    }

    /// Marks a fresh run directory as this run's: the marker link, then the run's `flock` on the directory itself,
    /// held through `runFD` until the run lets go of it (or its process dies). A shared directory's lock is shared,
    /// so that the run's other agents can take it too.
    private static func mark(_ runFD: Int32, with marker: RunMarker, shared: Bool = false) throws(LoadgenError) {
        let text = String(decoding: (try? FrameCodec.makeEncoder().encode(marker)) ?? Data("{}".utf8), as: UTF8.self)
        guard symlinkat(text, runFD, RunMarker.fileName) == 0 else {
            throw Self.creationError(errno, otherwise: "The run's marker cannot be created")
        }
        if shared {
            if flock(runFD, LOCK_SH | LOCK_NB) != 0, errno == EWOULDBLOCK { throw .io("The fresh run directory is locked by someone else.") }
            return
        }
        // Exclusive where the file system allows it on a directory; shared where it does not (NFS wants a file open
        // for writing for an exclusive lock). Either way `loadgen clean`'s exclusive attempt fails while the run
        // lives. Where no lock works at all, clean cannot tell a live run from a dead one and leaves both.
        if flock(runFD, LOCK_EX | LOCK_NB) != 0 {
            if errno == EWOULDBLOCK { throw .io("The fresh run directory is locked by someone else.") }
            _ = flock(runFD, LOCK_SH | LOCK_NB)
        }
    }

    /// Opens an existing run directory that this host's agent made (a worker process joining its parent's run).
    /// `count` subdirectories numbered from `first`; without `first`, from 0 and only when more than one.
    static func numbers(_ count: Int, first: Int?) -> Range<Int> {
        if let first { return first..<(first + max(1, count)) }
        return count > 1 ? 0..<count : 0..<0
    }

    public static func open(existing path: String, subdirectories: Int, firstSubdirectory: Int? = nil) throws(LoadgenError) -> RunDirectory {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            throw .io("The run directory '\(path)' cannot be opened: \(errnoDescription(errno)).")
        }
        return RunDirectory(path: path, descriptor: fd, subdirectories: Self.numbers(subdirectories, first: firstSubdirectory))
    }

    /// Creates and removes one file, so an unwritable target is refused before the run starts (in a shared directory
    /// under a name of the agent's own).
    private func probe(agentID: String? = nil) throws(LoadgenError) {
        let name = agentID.map { ".loadgen-probe-" + RunMarker.directoryName(runID: "", agentID: $0).dropFirst(9) } ?? ".loadgen-probe"
        let fd = lg_create_file(self.descriptor, name, 1)
        guard fd >= 0 else {
            throw Self.creationError(-fd, otherwise: "A probe file cannot be created in '\(self.path)'")
        }
        close(fd)
        unlinkat(self.descriptor, name, 0)
    }

    /// Why something could not be created in a run directory: the user's problem (permissions, a read-only or full
    /// file system) as a refusal, anything else as an I/O error starting with `otherwise`.
    private static func creationError(_ e: Int32, otherwise: String) -> LoadgenError {
        switch e {
        case EACCES, EPERM: .usage("Files cannot be created in the target directory: \(errnoDescription(e)).")
        case EROFS: .usage("The target directory is on a read-only file system.")
        case ENOSPC, EDQUOT: .usage("The target directory has no space left: \(errnoDescription(e)).")
        default: .io("\(otherwise): \(errnoDescription(e)).")
        }
    }

    private func makeSubdirectories() throws(LoadgenError) {
        for number in self.subdirectories {
            // In a shared directory another agent may have made it already.
            guard mkdirat(self.descriptor, FileNamer.directoryName(number), 0o755) == 0 || (self.shared && errno == EEXIST) else {
                throw .io("The subdirectory \(FileNamer.directoryName(number)) cannot be made in '\(self.path)': \(errnoDescription(errno)).")
            }
        }
    }

    /// Removes the subdirectories (they must be empty); returns how many could not be removed.
    @discardableResult
    public func removeSubdirectories() -> Int {
        var failed = 0
        for number in self.subdirectories where unlinkat(self.descriptor, FileNamer.directoryName(number), AT_REMOVEDIR) != 0 {
            // In a shared directory, one still holding files holds the other agents': the last one out removes it.
            if errno != ENOENT, !(self.shared && (errno == ENOTEMPTY || errno == EEXIST)) { failed += 1 }
        }
        return failed
    }

    /// Removes the subdirectories and the run directory, when nothing was written into them. A shared directory's
    /// subdirectories stay (the run's other agents may be about to write into them).
    @discardableResult
    public func discard() -> String? {
        if !self.shared { self.removeSubdirectories() }
        return self.removeSelf()
    }

    /// Removes the (emptied) run directory itself; nil on success, else a sentence saying what is left.
    public func removeSelf() -> String? {
        let slash = self.path.lastIndex(of: "/")!
        let parent = slash == self.path.startIndex ? "/" : String(self.path[..<slash])
        let name = String(self.path[self.path.index(after: slash)...])
        let parentFD = Glibc.open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard parentFD >= 0 else { return "The run directory '\(self.path)' was left in place: its parent cannot be opened." }
        defer { close(parentFD) }
        // Remove only the directory this run made: check it is still the same inode.
        var mine = stat()
        var there = stat()
        let found = fstatat(parentFD, name, &there, AT_SYMLINK_NOFOLLOW) == 0
        // A shared directory another agent of the run removed already.
        if !found, self.shared, errno == ENOENT { return nil }
        guard fstat(self.descriptor, &mine) == 0, found, mine.st_ino == there.st_ino, mine.st_dev == there.st_dev
        else { return "The run directory '\(self.path)' was replaced during the run and was left in place." }
        // The marker goes last, and only when nothing else is left: a directory holding files this run did not
        // create keeps it (so it stays loadgen's to clean).
        let onlyMarker = Self.holdsOnlyMarker(self.descriptor)
        // A shared directory holding more holds the other agents' files still: the last one out removes it.
        if self.shared, !onlyMarker { return nil }
        if self.ownsMarker, onlyMarker {
            unlinkat(self.descriptor, RunMarker.fileName, 0)
        }
        if unlinkat(parentFD, name, AT_REMOVEDIR) != 0 {
            let e = errno
            // Two agents of a shared directory finishing together: the other removed it, or put nothing back.
            if self.shared, e == ENOENT || e == ENOTEMPTY || e == EEXIST { return nil }
            if e == ENOTEMPTY || e == EEXIST {
                return "The run directory '\(self.path)' was left in place: it holds files this run did not create."
            }
            return "The run directory '\(self.path)' could not be removed: \(errnoDescription(e))."
        }
        return nil
    }
}

extension RunDirectory {
    /// Whether the directory behind `fd` holds nothing but the marker (called once the run's files are gone).
    static func holdsOnlyMarker(_ fd: Int32) -> Bool {
        RunCleaner.names(in: fd).allSatisfy { $0 == RunMarker.fileName }
    }
}

/// `realpath(3)`; nil with errno set when the path cannot be resolved.
func realPath(_ path: String) -> String? {
    guard let resolved = realpath(path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
}

/// Whether `path` is `root` or lies below it, comparing whole components.
func isPath(_ path: String, under root: String) -> Bool {
    if root == "/" { return path.hasPrefix("/") }
    return path == root || path.hasPrefix(root + "/")
}
