import CLoadgen
import Foundation
import Glibc
import LoadgenCore

/// `loadgen clean`: removes the run directories killed runs left under a target, and nothing else.
///
/// A directory is removed only when it is a real directory (not a symlink) directly under the target, it carries
/// the run marker (``RunMarker``), and its `flock` can be taken at once, which no live run allows. Runs
/// kept with `--keep` stay unless `includeKept`. The lock is held while the directory is removed, so two cleans
/// never race, and removal works through descriptors without following symlinks.
public enum RunCleaner {
    /// Cleans `target`, which must lie under one of `allowedRoots` (nil: anywhere).
    public static func clean(target: String, allowedRoots: [String]?, includeKept: Bool, dryRun: Bool)
        throws(LoadgenError) -> CleanReport
    {
        // The same checks and the same beneath-the-root open as a run's own directory.
        let (real, targetFD) = try RunDirectory.openTarget(target, allowedRoots: allowedRoots)
        defer { close(targetFD) }

        var report = CleanReport(target: real, dryRun: dryRun)
        for name in Self.names(in: targetFD).sorted() where name.hasPrefix("loadgen-") {
            let path = real == "/" ? "/\(name)" : "\(real)/\(name)"
            var info = stat()
            guard fstatat(targetFD, name, &info, AT_SYMLINK_NOFOLLOW) == 0, (info.st_mode & S_IFMT) == S_IFDIR else { continue }
            let dirFD = lg_open_directory_nofollow(targetFD, name)
            guard dirFD >= 0 else {
                // Gone since the listing: another clean (an agent sharing this file system) took it.
                if errno != ENOENT { report.failures.append("\(path): \(errnoDescription(errno))") }
                continue
            }
            defer { close(dirFD) }
            guard let marker = Self.readMarker(dirFD) else {
                if !Self.isGone(dirFD) { report.unmarked.append(path) }
                continue
            }
            // Held until this descriptor closes (the defer above), so two cleans never remove one directory; one
            // that waited for another's removal finds the directory gone.
            if flock(dirFD, LOCK_EX | LOCK_NB) != 0 {
                if errno == EWOULDBLOCK {
                    report.inUse.append(path)
                } else {
                    report.failures.append("\(path): whether a live run holds it cannot be told, since this file system refuses flock (\(errnoDescription(errno))); left in place")
                }
                continue
            }
            if Self.isGone(dirFD) { continue }
            if marker.keep, !includeKept { report.kept.append(path); continue }
            var entry = CleanReport.Entry(path: path, runID: marker.runID, agentID: marker.agentID, keep: marker.keep)
            var problems: [String] = []
            Self.walk(dirFD, remove: !dryRun, entry: &entry, problems: &problems)
            if !dryRun {
                // The marker last, then the directory itself, if it is still the one we opened.
                unlinkat(dirFD, RunMarker.fileName, 0)
                var there = stat()
                var mine = stat()
                if fstat(dirFD, &mine) == 0, fstatat(targetFD, name, &there, AT_SYMLINK_NOFOLLOW) == 0,
                   mine.st_ino == there.st_ino, mine.st_dev == there.st_dev {
                    if unlinkat(targetFD, name, AT_REMOVEDIR) != 0 { problems.append(errnoDescription(errno)) }
                } else {
                    problems.append("it was replaced while being cleaned")
                }
            }
            if problems.isEmpty {
                report.removed.append(entry)
            } else {
                report.failures.append("\(path): \(problems.prefix(3).joined(separator: "; "))")
            }
        }
        return report
    }

    /// Whether the directory behind `fd` was removed (by another clean) since it was opened.
    static func isGone(_ fd: Int32) -> Bool {
        var info = stat()
        return fstat(fd, &info) == 0 && info.st_nlink == 0
    }

    /// The marker of the directory behind `fd`: its `.loadgen-run` link's target, decoded; nil when it has none
    /// (or something else by that name).
    static func readMarker(_ fd: Int32) -> RunMarker? {
        var info = stat()
        guard fstatat(fd, RunMarker.fileName, &info, AT_SYMLINK_NOFOLLOW) == 0, (info.st_mode & S_IFMT) == S_IFLNK else { return nil }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBufferPointer { raw in
            raw.withMemoryRebound(to: CChar.self) { readlinkat(fd, RunMarker.fileName, $0.baseAddress!, $0.count) }
        }
        guard count > 0 else { return nil }
        return try? FrameCodec.makeDecoder().decode(RunMarker.self, from: Data(buffer[0..<count]))
    }

    /// Every entry name in a directory (not `.` and `..`).
    static func names(in fd: Int32) -> [String] {
        let copy = dup(fd)
        guard copy >= 0, let dir = fdopendir(copy) else {
            if copy >= 0 { close(copy) }
            return []
        }
        defer { closedir(dir) }
        rewinddir(dir)
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Counts (and removes, when asked) everything under `fd` but the marker, depth first, never following a
    /// symlink: a link is removed as a link.
    static func walk(_ fd: Int32, remove: Bool, entry: inout CleanReport.Entry, problems: inout [String], depth: Int = 0) {
        for name in Self.names(in: fd) where !(depth == 0 && name == RunMarker.fileName) {
            var info = stat()
            guard fstatat(fd, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            if (info.st_mode & S_IFMT) == S_IFDIR {
                guard depth < 64 else { problems.append("'\(name)' is nested too deep"); continue }
                let child = lg_open_directory_nofollow(fd, name)
                guard child >= 0 else { problems.append("'\(name)': \(errnoDescription(errno))"); continue }
                Self.walk(child, remove: remove, entry: &entry, problems: &problems, depth: depth + 1)
                close(child)
                entry.directories += 1
                if remove, unlinkat(fd, name, AT_REMOVEDIR) != 0 { problems.append("'\(name)': \(errnoDescription(errno))") }
            } else {
                entry.files += 1
                entry.bytes += UInt64(max(info.st_size, 0))
                if remove, unlinkat(fd, name, 0) != 0 { problems.append("'\(name)': \(errnoDescription(errno))") }
            }
        }
    }
}
