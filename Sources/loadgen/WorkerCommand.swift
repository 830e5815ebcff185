import ArgumentParser
import LoadgenWorkloads

/// The child side of `--mode processes`: started by an agent, never by hand.
struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run one worker process's share of a run (started by an agent over a pipe).",
        shouldDisplay: false
    )

    func run() throws {
        let status = WorkerProcess.serve()
        if status != 0 { throw ExitCode(status) }
    }
}
