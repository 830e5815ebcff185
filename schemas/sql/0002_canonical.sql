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
