#!/usr/bin/env bash
# history-bench.sh: how fast `loadgen history` and `history compare` answer over a store of RUNS runs.
#
#   usage (from the project root, after `swift build -c release`):  deploy/bench/history-bench.sh [path/to/loadgen]
#   env: RUNS=10000  ROUNDS=20
#
# One real run (with its interval series) is made with the binary, then copied RUNS times into the store with new
# ids and start times (the rows are the binary's own, cloned with SQL). Each command is then timed ROUNDS times as a
# whole process (start-up, opening the store, settling abandoned runs, the query, printing).
# Last line: "history ms: list=M list_label=M show=M compare=M (median of ROUNDS, RUNS runs)".
set -euo pipefail
LOADGEN=${1:-.build/release/loadgen}
RUNS=${RUNS:-10000} ROUNDS=${ROUNDS:-20}
[ -x "$LOADGEN" ] || { echo "no loadgen binary at $LOADGEN (build it: swift build -c release)"; exit 2; }
work=$(mktemp -d /dev/shm/lghist.XXXXXX); trap 'rm -rf "$work"' EXIT
db="$work/runs.sqlite"
"$LOADGEN" coordinate --target "$work" --files 200000 --mode threads --workers 2 --interval 100ms --label seed \
  --db "$db" >/dev/null 2>&1
python3 - "$db" "$RUNS" <<'PY'
import sqlite3, sys
db, runs = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
(rid, started) = c.execute("SELECT id, startedAtNanos FROM run").fetchone()
cols = lambda t: [r[1] for r in c.execute(f"PRAGMA table_info({t})")]
def clone(table, key, new, extra=None):
    cs = cols(table)
    sel = ", ".join("?" if col == key else (extra.get(col, col) if extra else col) for col in cs)
    c.execute(f"INSERT INTO {table} ({', '.join(cs)}) SELECT {sel} FROM {table} WHERE {key} = ?", (new, rid))
with c:
    for i in range(1, runs):
        new = f"{rid}-c{i:05d}"
        label = f"'bench{i % 10}'"
        clone("run", "id", new, {"startedAtNanos": f"startedAtNanos - {i} * 60000000000", "label": label})
        for t in ("runAgent", "intervalReport", "runHistogram", "runError"):
            clone(t, "runID", new)
print("runs:", c.execute("SELECT COUNT(*) FROM run").fetchone()[0],
      "intervals:", c.execute("SELECT COUNT(*) FROM intervalReport").fetchone()[0])
PY
time_ms() {
  python3 - "$ROUNDS" "$@" <<'PY'
import subprocess, sys, time, statistics
rounds, cmd = int(sys.argv[1]), sys.argv[2:]
ts = []
for _ in range(rounds):
    s = time.monotonic(); r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE); ts.append((time.monotonic() - s) * 1000)
    if r.returncode != 0: sys.exit(f"{cmd} failed: {r.stderr.decode()}")
print(f"{statistics.median(ts):.1f}")
PY
}
list=$(time_ms "$LOADGEN" history --db "$db")
label=$(time_ms "$LOADGEN" history --db "$db" --label bench3 --limit 50)
show=$(time_ms "$LOADGEN" history show last --db "$db")
compare=$(time_ms "$LOADGEN" history compare last~5000 last --db "$db")
echo "history ms: list=$list list_label=$label show=$show compare=$compare (median of $ROUNDS, $RUNS runs)"
