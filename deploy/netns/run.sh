#!/usr/bin/env bash
# run.sh: loadgen on several hosts for real. Three network namespaces joined by a bridge each run an agent; the
# coordinator runs outside (in the root namespace, on the bridge). Needs root and iproute2.
#
#   usage (from the project root, after a build):  deploy/netns/run.sh [path/to/loadgen]
#
# Checks:
#   1. a run across the three agents end to end, in two modes: totals are the sum of the agents', every agent wrote
#      its own run directory on the shared file system, nothing left behind;
#   2. a silent partition: one agent's link is dropped mid-run (no RST, packets just vanish): that agent stops its
#      load within 2 s, the coordinator marks it lost within 3 s, and the run ends partial with the others' results;
#   3. a killed coordinator (SIGKILL mid-run): every agent stops its load within 2 s, and `loadgen clean --agents`
#      removes the directories it left (a --keep run's only with --kept), never a foreign one or a look-alike;
#   4. mutual TLS: agents with --tls-cert (certificates naming their addresses, made with openssl) serve a TLS
#      coordinator, and refuse a plain one;
#   5. --agents-dns: a name in a private /etc/hosts (a mount namespace of the coordinator's own) that resolves to two
#      agents for the first run of a comparison and to three by the second is resolved again for each run, and a
#      name that resolves to nothing is refused with one sentence.
# Prints "netns: ok" when all pass; exits non-zero naming the first check that failed.
set -euo pipefail
LOADGEN=$(realpath "${1:-.build/debug/loadgen}")
[ -x "$LOADGEN" ] || { echo "netns: no loadgen binary at $LOADGEN"; exit 2; }
[ "$(id -u)" = 0 ] || { echo "netns: needs root (network namespaces)"; exit 2; }

tag=lg$$
bridge=${tag}br
work=$(mktemp -d /dev/shm/lgnetns.XXXXXX)
secret=$work/secret
shared=$work/shared
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for i in 1 2 3; do ip netns del "${tag}a$i" 2>/dev/null || true; done
  ip link del "$bridge" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "netns: FAILED: $*"; for i in 1 2 3; do echo "--- agent$i log"; tail -n 20 "$work/agent$i.log" 2>/dev/null || true; done; exit 1; }

mkdir -p "$shared"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret"; chmod 600 "$secret"

ip link add "$bridge" type bridge
ip addr add 10.231.0.1/24 dev "$bridge"
ip link set "$bridge" up
for i in 1 2 3; do
  ns=${tag}a$i
  ip netns add "$ns"
  ip link add "${tag}v$i" type veth peer name eth0 netns "$ns"
  ip link set "${tag}v$i" master "$bridge" up
  ip netns exec "$ns" ip addr add "10.231.0.1$i/24" dev eth0
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip link set lo up
done

start_agents() {
  for i in 1 2 3; do
    ip netns exec "${tag}a$i" "$LOADGEN" agent --listen "10.231.0.1$i:7420" --secret-file "$secret" \
      --allow-root "$shared" --id "agent$i" >>"$work/agent$i.log" 2>&1 &
    pids+=($!)
  done
  for i in 1 2 3; do
    for _ in $(seq 100); do grep -q "listening on" "$work/agent$i.log" 2>/dev/null && break; sleep 0.1; done
    grep -q "listening on" "$work/agent$i.log" || fail "agent$i did not start"
  done
}
agents=10.231.0.11:7420,10.231.0.12:7420,10.231.0.13:7420
start_agents

# 1. A run across three hosts, in two modes.
out=$("$LOADGEN" coordinate --agents "$agents" --secret-file "$secret" --target "$shared" --files 400 \
        --mode threads,processes --workers 2 --db "$work/runs.sqlite" --json 2>"$work/coordinator1.log") \
  || fail "the three-agent run exited $? ($(tail -n 3 "$work/coordinator1.log"))"
python3 - "$out" <<'PY' || fail "the three-agent run's totals"
import json, sys
lines = [json.loads(l) for l in sys.argv[1].splitlines()]
assert len(lines) == 2, lines
for r in lines:
    assert r["status"] == "completed", r["status"]
    assert r["agents"] == 3 and len(r["per_agent"]) == 3
    assert r["ops"] == 1200 == sum(a["ops"] for a in r["per_agent"]), r["ops"]
    assert sorted(a["agent"] for a in r["per_agent"]) == ["agent1", "agent2", "agent3"]
    assert r["cleanup"]["ops"] == 1200
    assert all(a["rtt_ms"] > 0 for a in r["per_agent"])
print("netns: 1. three agents, two modes: 1200 files per run, sums exact")
PY
[ -z "$(ls -A "$shared")" ] || fail "run directories were left in $shared: $(ls "$shared")"

count_files() { find "$1" -type f 2>/dev/null | wc -l || true; }
rundir_of() { ls -d "$shared"/loadgen-*-"$1" 2>/dev/null | head -n 1 || true; }

# 2. A silent partition of agent2 mid-run (bounded: 400,000 empty files per agent at most).
"$LOADGEN" coordinate --agents "$agents" --secret-file "$secret" --target "$shared" --files 400000 --size 0 \
  --mode threads --workers 1 --keep --interval 200ms --db "$work/runs.sqlite" --json >"$work/partition.json" \
  2>"$work/coordinator2.log" &
coordinator=$!
for _ in $(seq 100); do d=$(rundir_of agent2); [ -n "$d" ] && [ "$(count_files "$d")" -gt 20000 ] && break; sleep 0.1; done
[ -n "$(rundir_of agent2)" ] || fail "the partition run did not start"
ip link set "${tag}v2" down
dropped=$(date +%s.%N)
sleep 2.0
at2=$(count_files "$(rundir_of agent2)")
sleep 1.0
at3=$(count_files "$(rundir_of agent2)")
[ "$at2" = "$at3" ] || fail "agent2 kept writing after the partition: $at2 files 2 s after, $at3 at 3 s"
[ "$at3" -lt 400000 ] || fail "agent2 finished before the partition took effect"
wait "$coordinator" && status=0 || status=$?
[ "$status" = 1 ] || fail "the partitioned run exited $status, not 1"
python3 - "$work/partition.json" "$dropped" <<'PY' || { for a in 1 2 3; do echo "agent$a: $(count_files "$(rundir_of agent$a)") files on disk"; done; tail -n 5 "$work/coordinator2.log"; fail "the partitioned run's report"; }
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
assert r["status"] == "partial", r["status"]
by = {a["agent"]: a for a in r["per_agent"]}
assert by["agent2"]["status"] == "lost", by["agent2"]
assert by["agent1"]["status"] == by["agent3"]["status"] == "completed"
assert by["agent1"]["ops"] == by["agent3"]["ops"] == 400000
assert 0 < by["agent2"]["ops"] < 400000
msg = by["agent2"]["message"]
silent = float(msg.split("silent for ")[1].split("s ")[0])
assert silent < 3.0, msg
print(f"netns: 2. partition: agent2 stopped, marked lost after {silent:.2f}s of silence; run partial, the others' 400,000 files each kept")
PY
ip link set "${tag}v2" up
rm -rf "${shared:?}"/*

# 3. A coordinator killed with SIGKILL mid-run: every agent stops within 2 s.
"$LOADGEN" coordinate --agents "$agents" --secret-file "$secret" --target "$shared" --files 400000 --size 0 \
  --mode threads --workers 1 --keep --db "$work/runs.sqlite" >/dev/null 2>&1 &
coordinator=$!
for _ in $(seq 100); do d=$(rundir_of agent3); [ -n "$d" ] && [ "$(count_files "$d")" -gt 1000 ] && break; sleep 0.1; done
kill -9 "$coordinator"; wait "$coordinator" 2>/dev/null || true
sleep 2.0
before=$(count_files "$shared")
sleep 1.0
after=$(count_files "$shared")
[ "$before" = "$after" ] || fail "agents kept writing after the coordinator was killed: $before files 2 s after, $after at 3 s"
[ "$after" -lt 1200000 ] || fail "the runs finished before the kill"
"$LOADGEN" history --db "$work/runs.sqlite" --limit 1 --json | python3 -c '
import json, sys; r = json.load(sys.stdin)[0]; assert r["status"] == "aborted", r["status"]' \
  || fail "the killed coordinator's run is not stored as aborted"
# ... and loadgen clean through the agents removes what it left, beside a foreign directory and a look-alike.
mkdir -p "$shared/foreign" "$shared/loadgen-lookalike"; echo x >"$shared/foreign/f"; echo y >"$shared/loadgen-lookalike/f"
out=$("$LOADGEN" clean --target "$shared" --agents "$agents" --secret-file "$secret" 2>&1) || fail "clean: $out"
grep -q "kept with --keep" <<<"$out" || fail "clean without --kept did not leave the --keep run: $out"
[ "$(ls -d "$shared"/loadgen-2* | wc -l)" = 3 ] || fail "clean without --kept removed a --keep run's directory"
out=$("$LOADGEN" clean --target "$shared" --kept --agents "$agents" --secret-file "$secret" 2>&1) || fail "clean --kept: $out"
[ -z "$(ls -d "$shared"/loadgen-2* 2>/dev/null)" ] || fail "clean --kept left run directories: $(ls "$shared")"
[ -f "$shared/foreign/f" ] && [ -f "$shared/loadgen-lookalike/f" ] || fail "clean removed what is not loadgen's"
echo "netns: 3. coordinator killed: all agents stopped within 2 s ($after files), run stored as aborted; clean --agents removed its 3 directories only with --kept, and left a foreign directory and a look-alike"

# The agents serve the next run after all that.
rm -rf "${shared:?}"/*
"$LOADGEN" coordinate --agents "$agents" --secret-file "$secret" --target "$shared" --files 100 --mode threads \
  --db "$work/runs.sqlite" >/dev/null 2>"$work/coordinator4.log" || fail "the agents did not serve a run after the faults"

# 4. Mutual TLS across the namespaces: a second agent in each on port 7430.
tls=$work/tls; mkdir -p "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tls/ca.key" -out "$tls/ca.pem" \
  -days 2 -subj "/CN=loadgen netns CA" 2>/dev/null
cert() {  # cert NAME SAN USAGE
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tls/$1.key" -out "$tls/$1.csr" -subj "/CN=$1" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=%s\n' "$2" "$3" >"$tls/$1.cnf"
  openssl x509 -req -in "$tls/$1.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -out "$tls/$1.pem" \
    -days 2 -extfile "$tls/$1.cnf" 2>/dev/null
}
cert coordinator DNS:coordinator clientAuth
for i in 1 2 3; do
  cert "agent$i" "IP:10.231.0.1$i" serverAuth
  ip netns exec "${tag}a$i" "$LOADGEN" agent --listen "10.231.0.1$i:7430" --secret-file "$secret" --allow-root "$shared" \
    --id "tls$i" --tls-cert "$tls/agent$i.pem" --tls-key "$tls/agent$i.key" --tls-ca "$tls/ca.pem" >>"$work/tls$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 100); do grep -q "listening on" "$work/tls$i.log" 2>/dev/null && break; sleep 0.1; done
  grep -q "listening on" "$work/tls$i.log" || fail "TLS agent $i did not start ($(cat "$work/tls$i.log"))"
done
tls_agents=10.231.0.11:7430,10.231.0.12:7430,10.231.0.13:7430
out=$("$LOADGEN" coordinate --agents "$tls_agents" --secret-file "$secret" --tls-cert "$tls/coordinator.pem" \
        --tls-key "$tls/coordinator.key" --tls-ca "$tls/ca.pem" --target "$shared" --files 300 --mode threads \
        --db "$work/runs.sqlite" --json 2>"$work/coordinator5.log") \
  || fail "the TLS run exited $? ($(tail -n 3 "$work/coordinator5.log"))"
python3 -c 'import json,sys; r=json.loads(sys.argv[1].splitlines()[-1]); assert r["status"]=="completed" and r["ops"]==900, r' "$out" \
  || fail "the TLS run's totals"
"$LOADGEN" coordinate --agents "$tls_agents" --secret-file "$secret" --target "$shared" --files 10 --mode threads \
  --db "$work/runs.sqlite" >/dev/null 2>"$work/coordinator6.log" && fail "a plain coordinator got through to TLS agents"
grep -q -- "--tls-cert" "$work/coordinator6.log" || fail "the plain coordinator's refusal does not say what to give: $(cat "$work/coordinator6.log")"
echo "netns: 4. mutual TLS: three TLS agents served a TLS run (900 files); a plain coordinator was refused"

# 5. --agents-dns resolved again at the start of each run of a comparison. The coordinator runs in a mount namespace
# of its own with the hosts file bind-mounted over /etc/hosts; the file gains the third agent once the first run is
# under way.
rm -rf "${shared:?}"/*
hosts=$work/hosts
printf '127.0.0.1 localhost\n10.231.0.11 agents.lg.test\n10.231.0.12 agents.lg.test\n' >"$hosts"
unshare --mount sh -c 'mount --bind "$1" /etc/hosts && shift && exec "$@"' sh "$hosts" \
  "$LOADGEN" coordinate --agents-dns agents.lg.test:7420 --secret-file "$secret" --target "$shared" --files 200000 \
  --size 0 --mode threads,processes --workers 1 --db "$work/runs.sqlite" --json >"$work/dns.json" 2>"$work/coordinator7.log" &
coordinator=$!
for _ in $(seq 100); do [ -n "$(rundir_of agent1)" ] && break; sleep 0.1; done
[ -n "$(rundir_of agent1)" ] || fail "the --agents-dns run did not start ($(tail -n 3 "$work/coordinator7.log"))"
printf '10.231.0.13 agents.lg.test\n' >>"$hosts"
wait "$coordinator" || fail "the --agents-dns comparison exited $? ($(tail -n 3 "$work/coordinator7.log"))"
python3 - "$work/dns.json" <<'PY' || fail "the --agents-dns runs"
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]).read().splitlines()]
assert [r["mode"] for r in runs] == ["threads", "processes"], runs
assert [r["agents"] for r in runs] == [2, 3], [r["agents"] for r in runs]
assert sorted(a["agent"] for a in runs[1]["per_agent"]) == ["agent1", "agent2", "agent3"]
assert all(r["status"] == "completed" for r in runs)
print("netns: 5. --agents-dns: the first run found 2 agents, the second, resolved again, 3")
PY
printf '127.0.0.1 localhost\n' >"$hosts"
unshare --mount sh -c 'mount --bind "$1" /etc/hosts && shift && exec "$@"' sh "$hosts" \
  "$LOADGEN" coordinate --agents-dns nothing.lg.test --secret-file "$secret" --target "$shared" --files 10 --mode threads \
  --db "$work/runs.sqlite" >/dev/null 2>"$work/coordinator8.log" && fail "a name that resolves to nothing was accepted"
grep -q "The DNS name 'nothing.lg.test' resolves to no address" "$work/coordinator8.log" \
  || fail "no sentence for a name that resolves to nothing: $(cat "$work/coordinator8.log")"
echo "netns: ok"
