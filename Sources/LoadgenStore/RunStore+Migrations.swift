import GRDB

// The store's migrations, byte-identical to `schemas/sql/NNNN_*.sql` (a test checks it). Append-only: a migration
// that has shipped is never edited; a change is a new file and a new entry here, in order.
extension RunStore {
    static let migrations: [(identifier: String, sql: String)] = [
        ("0001_initial", #"""
-- loadgen run store, migration 0001: runs, their agents, their interval series, histograms and errors.
-- Append-only: a shipped migration is never edited; changes come as new numbered files.

CREATE TABLE run (
    id TEXT PRIMARY KEY NOT NULL,
    label TEXT,
    workload TEXT NOT NULL,
    mode TEXT NOT NULL,
    workers INTEGER NOT NULL,
    status TEXT NOT NULL,
    message TEXT,
    target TEXT NOT NULL,
    request TEXT NOT NULL,
    agentCount INTEGER NOT NULL,
    loadgenVersion TEXT NOT NULL,
    coordinatorHost TEXT NOT NULL,
    coordinatorPid INTEGER NOT NULL,
    coordinatorStartTicks INTEGER NOT NULL,
    bootID TEXT NOT NULL,
    startedAt TEXT NOT NULL,
    startedAtNanos INTEGER NOT NULL,
    lastSeenAtNanos INTEGER NOT NULL,
    endedAt TEXT,
    durationNanos INTEGER,
    ops INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    opsPerSecond REAL,
    mibPerSecond REAL,
    p50Micros REAL,
    p90Micros REAL,
    p99Micros REAL,
    p999Micros REAL,
    maxMicros REAL,
    meanMicros REAL,
    firstDoneNanos INTEGER,
    lastDoneNanos INTEGER,
    cleanupOps INTEGER,
    cleanupDurationNanos INTEGER,
    cleanupOpsPerSecond REAL,
    report TEXT
);
CREATE INDEX run_startedAtNanos ON run(startedAtNanos);
CREATE INDEX run_label ON run(label, startedAtNanos);
CREATE INDEX run_status ON run(status);

CREATE TABLE runAgent (
    runID TEXT NOT NULL REFERENCES run(id) ON DELETE CASCADE,
    agentIndex INTEGER NOT NULL,
    agentID TEXT NOT NULL,
    host TEXT NOT NULL,
    address TEXT NOT NULL,
    cores INTEGER NOT NULL,
    loadgenVersion TEXT NOT NULL,
    rttNanos INTEGER NOT NULL,
    clockOffsetNanos INTEGER NOT NULL,
    status TEXT NOT NULL,
    message TEXT,
    runDirectory TEXT,
    ops INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    durationNanos INTEGER,
    opsPerSecond REAL,
    p50Micros REAL,
    p99Micros REAL,
    maxMicros REAL,
    firstDoneNanos INTEGER,
    lastDoneNanos INTEGER,
    PRIMARY KEY (runID, agentIndex)
);

CREATE TABLE intervalReport (
    runID TEXT NOT NULL REFERENCES run(id) ON DELETE CASCADE,
    agentIndex INTEGER NOT NULL,
    phase TEXT NOT NULL,
    seq INTEGER NOT NULL,
    elapsedNanos INTEGER NOT NULL,
    receivedAtNanos INTEGER NOT NULL,
    ops INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    errorsByKind TEXT NOT NULL,
    p50Micros REAL,
    p99Micros REAL,
    maxMicros REAL,
    histogram TEXT NOT NULL,
    latencySumNanos INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX intervalReport_run ON intervalReport(runID, agentIndex, phase, seq);

CREATE TABLE runHistogram (
    runID TEXT NOT NULL REFERENCES run(id) ON DELETE CASCADE,
    phase TEXT NOT NULL,
    histogram TEXT NOT NULL,
    PRIMARY KEY (runID, phase)
);

CREATE TABLE runError (
    runID TEXT NOT NULL REFERENCES run(id) ON DELETE CASCADE,
    phase TEXT NOT NULL,
    kind TEXT NOT NULL,
    count INTEGER NOT NULL,
    sample TEXT,
    PRIMARY KEY (runID, phase, kind)
);
"""#),
        ("0002_canonical", #"""
-- loadgen run store, migration 0002: one canonical form of a run.
-- A run is kept as what its agents reported: each interval as its protocol-4 body (intervalReport.body, the
-- Interval message of schemas/wire/frames.proto, with all the interval carried) and each agent's phase_done (phaseDone);
-- its report is computed from them by the code the coordinator runs. The run and runAgent summary columns stay
-- as the index that history lists, filters and compares by. Runs stored before this migration keep their
-- report (run.report), histograms (runHistogram) and errors (runError) and are read from them; new runs write
-- none of those.

ALTER TABLE intervalReport ADD COLUMN body BLOB;

ALTER TABLE run ADD COLUMN endedAtNanos INTEGER;

CREATE TABLE phaseDone (
    runID TEXT NOT NULL REFERENCES run(id) ON DELETE CASCADE,
    agentIndex INTEGER NOT NULL,
    phase TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT,
    ops INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    durationNanos INTEGER NOT NULL,
    firstDoneNanos INTEGER NOT NULL,
    lastDoneNanos INTEGER NOT NULL,
    PRIMARY KEY (runID, agentIndex, phase)
);
"""#),
        ("0003_sets", #"""
-- loadgen run store, migration 0003: sets of runs and every run's validity.
-- A set is runs made to be judged together: --runs N repeats of a run (with several modes, interleaved), or the
-- steps of a --find-max capacity search; runSet keeps its kind, what it asked for and its result (the search's
-- capacity, or the set's medians) as JSON, and run.setID ties each run to it. run.validity is the run's verdict
-- (valid, suspect or invalid), a summary column for history's list; the reasons are computed with the report.

ALTER TABLE run ADD COLUMN setID TEXT;
ALTER TABLE run ADD COLUMN validity TEXT;
CREATE INDEX run_setID ON run(setID);

CREATE TABLE runSet (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    label TEXT,
    workload TEXT NOT NULL,
    modes TEXT NOT NULL,
    startedAt TEXT NOT NULL,
    startedAtNanos INTEGER NOT NULL,
    endedAtNanos INTEGER,
    request TEXT NOT NULL,
    result TEXT
);
CREATE INDEX runSet_startedAtNanos ON runSet(startedAtNanos);
"""#),
    ]

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        for migration in migrations {
            migrator.registerMigration(migration.identifier) { db in
                try db.execute(sql: migration.sql)
            }
        }
        return migrator
    }
}
