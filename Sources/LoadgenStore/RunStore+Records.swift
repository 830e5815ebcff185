import Foundation
import GRDB
import LoadgenCore

// MARK: - Record types: the store's tables as GRDB reads and writes them
//
// Column names are the properties' names (the tables are in camelCase); integers are Int64, as SQLite holds them.

/// A row of `run`: the request, who ran it, and the summary figures history lists and filters by.
struct RunRow: Codable, FetchableRecord, TableRecord {
    static let databaseTableName = "run"

    var id: String
    var label: String?
    var workload: String
    var mode: String
    var workers: Int
    var status: String
    var message: String?
    var target: String
    var request: String
    var agentCount: Int
    var loadgenVersion: String
    var startedAt: String
    var startedAtNanos: Int64
    var endedAt: String?
    var endedAtNanos: Int64?
    var durationNanos: Int64?
    var ops: Int64
    var errors: Int64
    var opsPerSecond: Double?
    var mibPerSecond: Double?
    var p50Micros: Double?
    var p99Micros: Double?
    /// The report as an older loadgen stored it (runs stored before migration 0002 only).
    var report: String?
    /// Migration 0003: the set the run belongs to, and its validity verdict.
    var setID: String?
    var validity: String?

    enum Columns {
        static let setID = Column(CodingKeys.setID)
        static let id = Column(CodingKeys.id)
        static let label = Column(CodingKeys.label)
        static let workload = Column(CodingKeys.workload)
        static let mode = Column(CodingKeys.mode)
        static let status = Column(CodingKeys.status)
        static let startedAtNanos = Column(CodingKeys.startedAtNanos)
    }

    var listing: RunListing {
        RunListing(runID: self.id, label: self.label, workload: self.workload, mode: self.mode, workers: self.workers,
                   agents: self.agentCount, status: self.status, target: self.target, startedAt: self.startedAt,
                   endedAt: self.endedAt, durationS: self.durationNanos.map { Double($0) / 1e9 }, ops: self.ops,
                   errors: self.errors, opsPerS: self.opsPerSecond, mibPerS: self.mibPerSecond, p50Us: self.p50Micros,
                   p99Us: self.p99Micros, message: self.message, validity: self.validity, setID: self.setID)
    }
}

/// A row of `runAgent`: one agent of a run, and how it ended.
struct AgentRow: Codable, FetchableRecord, TableRecord {
    static let databaseTableName = "runAgent"

    var runID: String
    var agentIndex: Int
    var agentID: String
    var host: String
    var address: String
    var cores: Int
    var rttNanos: Int64
    var clockOffsetNanos: Int64
    var status: String
    var message: String?
    var runDirectory: String?

    enum Columns {
        static let runID = Column(CodingKeys.runID)
        static let agentIndex = Column(CodingKeys.agentIndex)
    }
}

/// A row of `intervalReport`: one interval of one agent, kept whole in `body` (the Interval message of protocols 4 and 5, byte for byte the same), with
/// the figures `history show` lists beside it.
struct IntervalRow: Codable, FetchableRecord, TableRecord {
    static let databaseTableName = "intervalReport"

    var runID: String
    var agentIndex: Int
    var phase: String
    var seq: Int
    var elapsedNanos: Int64
    var ops: Int64
    var bytes: Int64
    var errors: Int64
    var errorsByKind: String
    var p50Micros: Double?
    var p99Micros: Double?
    var maxMicros: Double?
    /// The histogram as text (runs stored before migration 0002; empty after).
    var histogram: String
    var latencySumNanos: Int64
    var body: Data?

    enum Columns {
        static let runID = Column(CodingKeys.runID)
        static let agentIndex = Column(CodingKeys.agentIndex)
        static let phase = Column(CodingKeys.phase)
        static let seq = Column(CodingKeys.seq)
    }

    /// The interval as the agent sent it.
    func interval() throws(LoadgenError) -> WireMessage.Interval {
        if let body { return try WireMessage.Interval(binaryBody: Array(body)) }
        // Stored by an older loadgen: the counters and the histogram's text, in the JSON form of protocol 3.
        let json = #"{"run_id":"\#(self.runID)","phase":"\#(self.phase)","seq":\#(self.seq),"elapsed_nanos":\#(self.elapsedNanos),"ops":\#(self.ops),"bytes":\#(self.bytes),"errors":\#(self.errorsByKind),"error_samples":{},"latency":\#(self.histogram),"latency_sum_nanos":\#(self.latencySumNanos)}"#
        do {
            return try FrameCodec.makeDecoder().decode(WireMessage.Interval.self, from: Data(json.utf8))
        } catch {
            throw LoadgenError(.store, "A stored interval (run \(self.runID), agent \(self.agentIndex), seq \(self.seq)) is unreadable: \(error).")
        }
    }
}

/// A row of `phaseDone`: how a phase ended on one agent (its `phase_done`, as received).
struct PhaseDoneRecord: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "phaseDone"

    var runID: String
    var agentIndex: Int
    var phase: String
    var status: String
    var message: String?
    var ops: Int64
    var bytes: Int64
    var errors: Int64
    var durationNanos: Int64
    var firstDoneNanos: Int64
    var lastDoneNanos: Int64

    enum Columns {
        static let runID = Column(CodingKeys.runID)
    }

    init(runID: String, agentIndex: Int, done: WireMessage.PhaseDone) {
        self.runID = runID
        self.agentIndex = agentIndex
        self.phase = done.phase.rawValue
        self.status = done.status.rawValue
        self.message = done.message
        self.ops = Int64(bitPattern: done.ops)
        self.bytes = Int64(bitPattern: done.bytes)
        self.errors = Int64(bitPattern: done.errors)
        self.durationNanos = Int64(bitPattern: done.durationNanos)
        self.firstDoneNanos = Int64(bitPattern: done.firstDoneNanos)
        self.lastDoneNanos = Int64(bitPattern: done.lastDoneNanos)
    }

    var done: WireMessage.PhaseDone? {
        guard let phase = Phase(rawValue: self.phase), let status = RunStatus(rawValue: self.status) else { return nil }
        return WireMessage.PhaseDone(runID: self.runID, phase: phase, status: status, message: self.message,
                                     ops: UInt64(bitPattern: self.ops), bytes: UInt64(bitPattern: self.bytes),
                                     errors: UInt64(bitPattern: self.errors),
                                     durationNanos: UInt64(bitPattern: self.durationNanos),
                                     firstDoneNanos: UInt64(bitPattern: self.firstDoneNanos),
                                     lastDoneNanos: UInt64(bitPattern: self.lastDoneNanos))
    }
}

/// A row of `runSet`: runs made to be judged together, `--runs N` repeats (kind `repeat`) or a capacity search's
/// steps (kind `search`), with what was asked (`request`, JSON) and the outcome (`result`, JSON).
public struct RunSetRecord: Codable, Sendable, Hashable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "runSet"

    public var id: String
    public var kind: String
    public var label: String?
    public var workload: String
    /// The modes, comma-separated.
    public var modes: String
    public var startedAt: String
    public var startedAtNanos: Int64
    public var endedAtNanos: Int64?
    public var request: String
    public var result: String?

    public init(id: String, kind: String, label: String?, workload: String, modes: String, startedAtWallNanos: UInt64,
                request: String) {
        self.id = id
        self.kind = kind
        self.label = label
        self.workload = workload
        self.modes = modes
        self.startedAt = RunReport.iso8601(wallNanos: startedAtWallNanos)
        self.startedAtNanos = Int64(startedAtWallNanos)
        self.endedAtNanos = nil
        self.request = request
        self.result = nil
    }

    public enum Columns {
        public static let id = Column(CodingKeys.id)
        public static let startedAtNanos = Column(CodingKeys.startedAtNanos)
    }
}
