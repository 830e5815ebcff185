/// `--preset`: IO500's two metadata shapes, as its `phase_mdtest_easy.c` and `phase_mdtest_hard.c` run mdtest. Each
/// sets what it names; a flag given beside it wins.
///
/// - **mdtest-easy**: `-n 1000000 -u -L -F` and no `-w`: a million empty files per process, each process in a
///   directory of its own; phases write (create, under the stonewall), stat and delete.
/// - **mdtest-hard**: `-n 1000000 -t -w 3901 -e 3901 -F`: a million 3901-byte files per process, all in one shared
///   directory; phases write (create, under the stonewall, then `-Y`: a sync), stat, read and delete.
///
/// Both run the write phase under IO500's default stonewall of 300 seconds (`-W`). Processes are loadgen's
/// workers: a preset's file count is a million per worker.
public enum WritePreset: String, CaseIterable, Sendable {
    case mdtestEasy = "mdtest-easy"
    case mdtestHard = "mdtest-hard"

    public static let filesPerWorker = 1_000_000
    public static let stonewallNanos: UInt64 = 300_000_000_000

    public static func parse(_ text: String) throws(LoadgenError) -> WritePreset {
        guard let preset = WritePreset(rawValue: text.lowercased()) else {
            throw .usage("The preset '\(text)' is not one of \(Self.allCases.map(\.rawValue).joined(separator: ", ")).")
        }
        return preset
    }

    /// What the preset sets, for `workers` workers.
    public struct Parameters: Equatable, Sendable {
        public var files: Int
        public var size: SizeRange
        public var dirPerWorker: Bool
        public var stat: Bool
        public var read: Bool
        public var stonewallNanos: UInt64
        public var fsync: FsyncPolicy
    }

    public func parameters(workers: Int) -> Parameters {
        switch self {
        case .mdtestEasy:
            Parameters(files: Self.filesPerWorker * workers, size: SizeRange(exactly: 0), dirPerWorker: true, stat: true,
                       read: false, stonewallNanos: Self.stonewallNanos, fsync: .none)
        case .mdtestHard:
            Parameters(files: Self.filesPerWorker * workers, size: SizeRange(exactly: 3901), dirPerWorker: false, stat: true,
                       read: true, stonewallNanos: Self.stonewallNanos, fsync: .end)
        }
    }
}
