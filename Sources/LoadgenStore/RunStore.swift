import Foundation
import GRDB
import LoadgenCore

/// Every run loadgen made, in SQLite (GRDB over the system libsqlite3).
///
/// One value over one `DatabaseWriter` (a WAL `DatabasePool` on disk, a queue in memory for tests); a value you hold
/// is always on the current schema. Writes are small transactions, each one invariant; the store runs with
/// `synchronous = FULL`, so the commit that ends a run survives a power cut, and with a busy timeout, so `history`
/// in another process never fails with "database is locked" and never blocks a run (WAL readers do not block the
/// writer).
public struct RunStore: Sendable {
    let writer: any DatabaseWriter

    /// The reader for queries.
    public var reader: any DatabaseReader { self.writer }

    init(_ writer: any DatabaseWriter) throws(LoadgenError) {
        self.writer = writer
        do {
            try Self.migrator.migrate(writer)
        } catch {
            throw LoadgenError(.store, "The run store could not be prepared: \(error).")
        }
    }

    static func makeConfiguration() -> Configuration {
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        configuration.foreignKeysEnabled = true
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        return configuration
    }

    /// An empty store in memory (tests).
    public static func inMemory() throws(LoadgenError) -> RunStore {
        do {
            return try RunStore(DatabaseQueue(configuration: makeConfiguration()))
        } catch let error as LoadgenError {
            throw error
        } catch {
            throw LoadgenError(.store, "An in-memory store could not be made: \(error).")
        }
    }

    /// Opens (creating it and its directories if needed) the store at `path`. Refuses, leaving the file untouched, a
    /// file that is not a loadgen store or is corrupt, and a store written by a newer loadgen.
    public static func open(path: String) throws(LoadgenError) -> RunStore {
        let url = URL(fileURLWithPath: path)
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        if fm.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard !isDirectory.boolValue else {
                throw .usage("The run store '\(path)' is a directory; give --db the path of a file.")
            }
            try Self.checkExisting(path: path)
        } else {
            do {
                try fm.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            } catch {
                throw .usage("The directory for the run store '\(path)' cannot be made: \(error.localizedDescription)")
            }
        }
        do {
            return try RunStore(DatabasePool(path: path, configuration: makeConfiguration()))
        } catch let error as LoadgenError {
            throw error
        } catch let error as DatabaseError {
            throw Self.describe(error, path: path)
        } catch {
            throw LoadgenError(.store, "The run store '\(path)' cannot be opened: \(error).")
        }
    }

    /// Checks an existing file before anything writes to it: the SQLite header, a readable schema, and migrations
    /// this loadgen knows.
    private static func checkExisting(path: String) throws(LoadgenError) {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw .usage("The run store '\(path)' cannot be read.")
        }
        let header = (try? handle.read(upToCount: 16)) ?? Data()
        try? handle.close()
        if header.isEmpty { return }  // An empty file becomes a new store.
        guard header == Data("SQLite format 3\0".utf8) else {
            throw .usage("The file '\(path)' is not a loadgen run store (it is not an SQLite database); it was left untouched.")
        }
        var configuration = Configuration()
        configuration.readonly = true
        configuration.busyMode = .timeout(10)
        do {
            let queue = try DatabaseQueue(path: path, configuration: configuration)
            defer { try? queue.close() }
            try queue.read { db in
                _ = try Int.fetchOne(db, sql: "PRAGMA schema_version")
                guard try db.tableExists("grdb_migrations") || !(try db.tableExists("run")) else {
                    throw LoadgenError(.usage, "The database '\(path)' is not a loadgen run store; it was left untouched.")
                }
                let tables = try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'")
                if !tables.isEmpty, !tables.contains("grdb_migrations") {
                    throw LoadgenError(.usage, "The database '\(path)' is not a loadgen run store (it holds other tables); it was left untouched.")
                }
                if try Self.migrator.hasBeenSuperseded(db) {
                    throw LoadgenError(.usage, "The run store '\(path)' was written by a newer loadgen (it has migrations this version does not know); upgrade loadgen or give another --db.")
                }
            }
        } catch let error as LoadgenError {
            throw error
        } catch let error as DatabaseError {
            throw Self.describe(error, path: path)
        } catch {
            throw LoadgenError(.store, "The run store '\(path)' cannot be read: \(error).")
        }
    }

    private static func describe(_ error: DatabaseError, path: String) -> LoadgenError {
        switch error.resultCode {
        case .SQLITE_NOTADB:
            return .usage("The file '\(path)' is not a loadgen run store (it is not an SQLite database); it was left untouched.")
        case .SQLITE_CORRUPT:
            return .usage("The run store '\(path)' is corrupt; it was left untouched (move it aside to start a new one).")
        case .SQLITE_BUSY, .SQLITE_LOCKED:
            return LoadgenError(.store, "The run store '\(path)' stayed locked by another process for 10 seconds.")
        case .SQLITE_CANTOPEN, .SQLITE_PERM, .SQLITE_READONLY:
            return .usage("The run store '\(path)' cannot be opened for writing: \(error.message ?? "permission denied").")
        default:
            return LoadgenError(.store, "The run store '\(path)' failed: \(error.message ?? "\(error.resultCode)").")
        }
    }

    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) throws(LoadgenError) -> T {
        try self.described { try self.writer.write(body) }
    }

    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) throws(LoadgenError) -> T {
        try self.described { try self.writer.read(body) }
    }

    /// Runs a database access, turning what it throws into one sentence naming the store.
    private func described<T>(_ access: () throws -> T) throws(LoadgenError) -> T {
        do {
            return try access()
        } catch {
            throw self.described(error)
        }
    }

    /// What a database access threw, as one sentence naming the store.
    func described(_ error: any Error) -> LoadgenError {
        switch error {
        case let error as LoadgenError: error
        case let error as DatabaseError: Self.describe(error, path: self.writer.path)
        default: LoadgenError(.store, "The run store failed: \(error).")
        }
    }

    /// Runs a check query (`PRAGMA integrity_check`), for tests and `history`'s diagnostics.
    public func integrityCheck() throws(LoadgenError) -> [String] {
        try self.read { db in try String.fetchAll(db, sql: "PRAGMA integrity_check") }
    }
}
