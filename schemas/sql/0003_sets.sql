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
