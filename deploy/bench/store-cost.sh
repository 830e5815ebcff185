#!/usr/bin/env bash
# store-cost.sh: a run's throughput with the run store on against the same run with storing turned off.
#
#   usage (from the project root, after `swift build -c release`):  deploy/bench/store-cost.sh [path/to/loadgen]
#   env: FILES=200000  WORKERS=2  ROUNDS=5  MODE=threads  ROOT=/dev/shm  INTERVAL=100ms
#
# Rounds alternate store on / store off (--no-store) on tmpfs; a short interval makes the store work hardest.
# Last line: "store cost: on/off=R (files/s medians on=X off=Y)".
set -euo pipefail
LOADGEN=${1:-.build/release/loadgen}
FILES=${FILES:-200000} WORKERS=${WORKERS:-2} ROUNDS=${ROUNDS:-5} MODE=${MODE:-threads} ROOT=${ROOT:-/dev/shm}
INTERVAL=${INTERVAL:-100ms}
[ -x "$LOADGEN" ] || { echo "no loadgen binary at $LOADGEN (build it: swift build -c release)"; exit 2; }
work=$(mktemp -d "$ROOT/lgstore.XXXXXX"); trap 'rm -rf "$work"' EXIT
on=() off=()
rate() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read().splitlines()[-1])["ops_per_s"])'; }
for round in $(seq "$ROUNDS"); do
  on+=("$("$LOADGEN" coordinate --target "$work" --files "$FILES" --mode "$MODE" --workers "$WORKERS" \
           --interval "$INTERVAL" --db "$work/runs.sqlite" --json 2>/dev/null | rate)")
  off+=("$("$LOADGEN" coordinate --target "$work" --files "$FILES" --mode "$MODE" --workers "$WORKERS" \
           --interval "$INTERVAL" --no-store --json 2>/dev/null | rate)")
done
python3 - "${on[*]}" "${off[*]}" <<'PY'
import statistics, sys
on = [float(x) for x in sys.argv[1].split()]; off = [float(x) for x in sys.argv[2].split()]
print("on: ", " ".join(f"{x:.0f}" for x in on)); print("off:", " ".join(f"{x:.0f}" for x in off))
print(f"store cost: on/off={statistics.median(on)/statistics.median(off):.3f} (files/s medians on={statistics.median(on):.0f} off={statistics.median(off):.0f})")
PY
