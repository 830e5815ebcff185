import ArgumentParser
import Foundation
import LoadgenCore
import LoadgenStore

/// Where the run store is: `--db`, else `$LOADGEN_DB`, else `$XDG_DATA_HOME/loadgen/loadgen.sqlite`
/// (`~/.local/share/loadgen/loadgen.sqlite`).
struct StoreOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The run store (default: $LOADGEN_DB, else $XDG_DATA_HOME/loadgen/loadgen.sqlite).",
                               valueName: "PATH"))
    var db: String?

    var path: String {
        if let db { return db }
        let env = ProcessInfo.processInfo.environment
        if let db = env["LOADGEN_DB"], !db.isEmpty { return db }
        if let data = env["XDG_DATA_HOME"], !data.isEmpty { return data + "/loadgen/loadgen.sqlite" }
        return NSHomeDirectory() + "/.local/share/loadgen/loadgen.sqlite"
    }

    /// Opens the store and settles runs whose coordinator died.
    func open() throws(LoadgenError) -> RunStore {
        let store = try RunStore.open(path: self.path)
        try store.markAbandonedRuns(seenFrom: ProcessIdentity.current(host: HostEnvironment.hostName),
                                    nowWallNanos: MonotonicClock.wallNanos())
        return store
    }
}
