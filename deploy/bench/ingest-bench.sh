#!/usr/bin/env bash
# ingest-bench.sh: the coordinator's cost of ingesting many agents' reports.
#
#   usage (from the project root, after `swift build -c release`):  deploy/bench/ingest-bench.sh [path/to/loadgen]
#   env: AGENTS=200  SECONDS_RUN=300  SAMPLES=20000
#
# AGENTS simulated agents (loadgen-bench fake-agents: protocol clients in one process) each report an interval every
# second with a realistic latency histogram (SAMPLES log-normal values, hundreds of buckets) for SECONDS_RUN seconds.
# One coordinator drives them (storing every interval), and its CPU (utime+stime from /proc) and RSS are sampled
# every 10 seconds.
# CPU is reported for the steady ingest (from 10 s in to the last sample before the run's end, so the handshake and
# the final report are outside it) and for the whole run.
# Last line: "ingest: AGENTS agents, coordinator cpu=P% of one core (whole run Q%), rss first=A MiB last=B MiB max=C MiB".
set -euo pipefail
LOADGEN=${1:-.build/release/loadgen}
BENCH=$(dirname "$LOADGEN")/loadgen-bench
AGENTS=${AGENTS:-200} SECONDS_RUN=${SECONDS_RUN:-300} SAMPLES=${SAMPLES:-20000}
[ -x "$LOADGEN" ] && [ -x "$BENCH" ] || { echo "build first: swift build -c release"; exit 2; }
work=$(mktemp -d /dev/shm/lgingest.XXXXXX)
"$BENCH" fake-agents --count "$AGENTS" --seconds "$SECONDS_RUN" --samples "$SAMPLES" --agents-file "$work/agents" >"$work/fake.log" 2>&1 &
fake=$!
trap 'kill $fake 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$work/agents" ] && break; sleep 0.1; done
"$LOADGEN" coordinate --agents-file "$work/agents" --target /tmp --files 1000 --mode threads --keep \
  --db "$work/runs.sqlite" --json >"$work/report.json" 2>"$work/coordinator.log" &
coord=$!
ticks=$(getconf CLK_TCK)
samples=()
start=$(date +%s.%N)
while kill -0 "$coord" 2>/dev/null; do
  if [ -r "/proc/$coord/stat" ]; then
    read -r cpu rss < <(awk '{print $14+$15, $24*4/1024}' "/proc/$coord/stat" 2>/dev/null || echo "0 0")
    samples+=("$(date +%s.%N) $cpu $rss")
  fi
  sleep 10
done
wait "$coord" || true
python3 - "$ticks" "$AGENTS" "${samples[@]}" <<'PY'
import sys
ticks = float(sys.argv[1]); agents = sys.argv[2]
rows = [tuple(map(float, s.split())) for s in sys.argv[3:] if len(s.split()) == 3]
rows = [r for r in rows if r[2] > 0]
(t0, c0, _), (t1, c1, _) = rows[1], rows[-2]
cpu = (c1 - c0) / ticks / (t1 - t0) * 100
(w0, d0, _), (w1, d1, _) = rows[0], rows[-1]
whole = (d1 - d0) / ticks / (w1 - w0) * 100
rss = [r[2] for r in rows[1:]]
print("rss MiB every 10 s:", " ".join(f"{r:.0f}" for r in rss))
print(f"ingest: {agents} agents, coordinator cpu={cpu:.1f}% of one core (whole run {whole:.1f}%), rss first={rss[0]:.0f} MiB last={rss[-1]:.0f} MiB max={max(rss):.0f} MiB")
PY
python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).read().splitlines()[-1]); print("run", r["status"], "ops", r["ops"], "agents", r["agents"])' "$work/report.json"
