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

    /// Opens the store and settles runs whose coordinator died, telling the user (on stderr) which directories
    /// those runs left and how `loadgen clean` removes them.
    func open() throws(LoadgenError) -> RunStore {
        let store = try RunStore.open(path: self.path)
        let abandoned = try store.markAbandonedRuns(seenFrom: ProcessIdentity.current(host: HostEnvironment.hostName),
                                                    nowWallNanos: MonotonicClock.wallNanos())
        for run in abandoned {
            FileHandle.standardError.write(Data((Self.note(run) + "\n").utf8))
        }
        return store
    }

    /// One abandoned run, as the note printed when it is found.
    static func note(_ run: AbandonedRun) -> String {
        var text = "loadgen: run \(run.runID) was left running by a coordinator that stopped (killed, crashed or powered off); it is now marked aborted, keeping what it had received."
        guard let target = run.target, !run.directories.isEmpty else { return text }
        let here = run.directories.filter { $0.address == "embedded" }
        let remote = run.directories.filter { $0.address != "embedded" }
        let kept = run.keep ? " --kept" : ""
        if !here.isEmpty {
            text += " It may have left \(here.map(\.path).joined(separator: ", ")) on this host: `loadgen clean --target \(target)\(kept)` removes it."
        }
        if !remote.isEmpty {
            let places = remote.map { "\($0.path) on agent \($0.agentID)" }.joined(separator: ", ")
            let addresses = remote.map(\.address).joined(separator: ",")
            text += " It may have left \(places): `loadgen clean --target \(target)\(kept) --agents \(addresses)` (with the run's --secret-file) removes them."
        }
        return text
    }
}
