CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);

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
, body BLOB);

CREATE INDEX intervalReport_run ON intervalReport(runID, agentIndex, phase, seq);

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
, endedAtNanos INTEGER, setID TEXT, validity TEXT);

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

CREATE TABLE runError (
    runID TEXT NOT NULL REFERENCES run(id) ON DELETE CASCADE,
    phase TEXT NOT NULL,
    kind TEXT NOT NULL,
    count INTEGER NOT NULL,
    sample TEXT,
    PRIMARY KEY (runID, phase, kind)
);

CREATE TABLE runHistogram (
    runID TEXT NOT NULL REFERENCES run(id) ON DELETE CASCADE,
    phase TEXT NOT NULL,
    histogram TEXT NOT NULL,
    PRIMARY KEY (runID, phase)
);

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

CREATE INDEX run_label ON run(label, startedAtNanos);

CREATE INDEX run_setID ON run(setID);

CREATE INDEX run_startedAtNanos ON run(startedAtNanos);

CREATE INDEX run_status ON run(status);
