import ArgumentParser
import Foundation
import LoadgenCore
import LoadgenWorkloads

/// `loadgen`: a distributed load generator for file systems and HTTP endpoints that keeps every run.
@main
struct Loadgen: AsyncParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "loadgen",
        abstract: "A load generator for file systems and HTTP endpoints that measures exactly and keeps every run.",
        discussion: """
            Start with one command; it runs an embedded agent, so nothing else is needed:

              loadgen coordinate --target /tmp            write 10,000 small files in every mode and compare them
              loadgen coordinate --target http://127.0.0.1:8080/ --requests 1000
              loadgen history                             every run so far, newest first
              loadgen clean --target /tmp                 remove what killed runs left behind

            To spread load over several hosts, start `loadgen agent` on each and give the coordinator --agents.
            """,
        version: version,
        subcommands: [CoordinateCommand.self, AgentCommand.self, HistoryCommand.self, CleanCommand.self, WorkerCommand.self]
    )

    /// Parses and runs a command with loadgen's exit statuses: 0 done, 1 the run failed, was partial or aborted,
    /// 2 the request was refused before anything started (bad arguments included).
    static func main() async {
        signal(SIGPIPE, SIG_IGN)
        OpenFileBudget.raiseSoftLimit()
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as LoadgenError {
            FileHandle.standardError.write(Data("loadgen: \(error.message)\n".utf8))
            Foundation.exit(error.isRefusal ? 2 : 1)
        } catch let exit as ExitCode {
            Foundation.exit(exit.rawValue)
        } catch {
            let code = exitCode(for: error)
            let text = fullMessage(for: error)
            if code == .success {
                print(text)
                Foundation.exit(0)
            }
            FileHandle.standardError.write(Data((text.hasSuffix("\n") ? text : text + "\n").utf8))
            // Argument errors are refusals: nothing started (exit 2, as for every other refusal).
            Foundation.exit(code == .validationFailure ? 2 : code.rawValue)
        }
    }
}

extension LoadgenError {
    /// Lets commands throw loadgen errors from `validate()` and keep their exit status.
    var asValidation: ValidationError { ValidationError(self.message) }
}
