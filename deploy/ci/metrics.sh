#!/usr/bin/env bash
# metrics.sh: both /metrics pages read by Prometheus's own parser (prometheus_client, PyPI) during a real run.
#   usage (from the project root, after a build):  deploy/ci/metrics.sh [path/to/loadgen]
# An agent on loopback and a coordinator driving it, each with --metrics-listen; while the run's create phase is
# under way, both pages are fetched and parsed, and the families, types and labels checked; then the run is
# interrupted (Ctrl-C) and must end aborted. (That the figures equal a run's report exactly is MetricsTests'.)
# Prints "metrics: ok".
set -euo pipefail
LOADGEN=$(realpath "${1:-.build/debug/loadgen}")
[ -x "$LOADGEN" ] || { echo "metrics: no loadgen binary at $LOADGEN"; exit 2; }
python3 -c 'import prometheus_client' 2>/dev/null || pip install -q prometheus-client >/dev/null 2>&1 \
  || { echo "metrics: cannot install prometheus-client from PyPI"; exit 2; }
work=$(mktemp -d /dev/shm/lgmetrics.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
agent_port=$(free_port) agent_metrics=$(free_port) coord_metrics=$(free_port)
mkdir -p "$work/target"
"$LOADGEN" agent --insecure --listen "127.0.0.1:$agent_port" --allow-root "$work/target" --id agent1 \
  --metrics-listen "127.0.0.1:$agent_metrics" >"$work/agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q listening "$work/agent.log" && break; sleep 0.1; done
"$LOADGEN" coordinate --agents "127.0.0.1:$agent_port" --target "$work/target" --files 3000000 --mode threads \
  --workers 2 --metrics-listen "$coord_metrics" --db "$work/db.sqlite" --json >"$work/run.json" 2>"$work/coord.log" &
coord=$!
pids+=($coord)
check='
import sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
page = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
families = {f.name: f for f in text_string_to_metric_families(page)}
want = {"loadgen_operations": "counter", "loadgen_bytes": "counter", "loadgen_operation_latency_seconds": "histogram",
        "loadgen_agents_connected": "gauge", "loadgen_run_status": "gauge", "loadgen_run_phase": "gauge"}
for name, kind in want.items():
    assert name in families, f"{name} missing from {sys.argv[1]}"
    assert families[name].type == kind, f"{name} is a {families[name].type}, not a {kind}"
ops = [s for s in families["loadgen_operations"].samples if s.name == "loadgen_operations_total"]
assert ops and all(set(s.labels) == {"run", "agent", "workload", "mode", "phase"} for s in ops), ops
assert any(s.value > 0 for s in ops), "no operations counted yet"
buckets = [s for s in families["loadgen_operation_latency_seconds"].samples if s.name.endswith("_bucket")]
assert buckets and all("le" in s.labels for s in buckets)
print(f"{sys.argv[1]}: {len(families)} families, operations so far {int(sum(s.value for s in ops))}")
'
# Wait until the create phase has counted something, then read both pages mid-run.
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$coord_metrics/metrics" 2>/dev/null | grep -q '^loadgen_operations_total{.*} [1-9]' && break
  sleep 0.1
done
python3 -c "$check" "http://127.0.0.1:$agent_metrics/metrics" || { echo "metrics: FAILED: the agent's page"; exit 1; }
python3 -c "$check" "http://127.0.0.1:$coord_metrics/metrics" || { echo "metrics: FAILED: the coordinator's page"; exit 1; }
kill -INT "$coord"   # Ctrl-C: the run ends aborted with what was counted, and the command exits.
wait "$coord" || true
pids=("${pids[@]/$coord}")
ops=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["ops"])' "$work/run.json")
grep -q '"status":"aborted"' "$work/run.json" || { echo "metrics: FAILED: the interrupted run is not aborted"; cat "$work/coord.log"; exit 1; }
echo "metrics: ok (the interrupted run's report counts $ops files)"
