#!/usr/bin/env bash
# cluster.sh: the Slurm recipe (loadgen.sbatch) run for real, on a three-node Slurm cluster built on this machine.
# slurmctld runs in the root network namespace, on a bridge; one slurmd runs in each of three network namespaces
# (nodes n1..n3, 10.232.0.11-13), with a munged of its own. Needs root; installs slurm-wlm and munge if missing.
#
#   usage (from the project root, after a build):  deploy/slurm/cluster.sh [path/to/loadgen]
#
# Submits `sbatch -N3 --wait deploy/slurm/loadgen.sbatch DIR` with loadgen on the job's PATH, and checks: the job
# succeeded; the report its output names holds completed runs of 3 agents (n1, n2, n3); nothing is left in DIR or
# in the job's secret directory; the secret never appeared on a process's command line (`ps` sampled all through
# the job) nor in the job's output, and the secret file and its directory were never readable by group or others.
# Prints "slurm: ok", or "slurm: FAILED: <why>" with the logs and exits 1. Every wait is bounded: about 15 s when
# all is well, 2.5 minutes at the very most (past an install).
# Everything it makes (namespaces, bridge, daemons, files) goes on every exit path.
set -euo pipefail
LOADGEN=${1:+$(realpath "$1")}
cd "$(dirname "$0")/../.."
SBATCH_SCRIPT=$PWD/deploy/slurm/loadgen.sbatch
LOADGEN=${LOADGEN:-$PWD/.build/debug/loadgen}
[ -x "$LOADGEN" ] || { echo "slurm: no loadgen binary at $LOADGEN"; exit 2; }
[ "$(id -u)" = 0 ] || { echo "slurm: needs root (network namespaces, daemons)"; exit 2; }
started=$SECONDS

# What it needs, installed if missing.
missing=()
for pkg in slurm-wlm munge iproute2 python3 procps util-linux; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "slurm: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  aptlog=$(mktemp)
  { apt-get install -y -q "${missing[@]}" || { apt-get update -q && apt-get install -y -q "${missing[@]}"; }; } \
    >"$aptlog" 2>&1 || { tail -n 20 "$aptlog"; rm -f "$aptlog"; echo "slurm: FAILED: apt-get install ${missing[*]}"; exit 1; }
  rm -f "$aptlog"
fi

tag=lgs$$                       # deploy/netns/run.sh uses lg<pid>: names never meet
bridge=${tag}br
net=10.232.0                    # deploy/netns/run.sh uses 10.231.0.0/24
ctl_port=16817; node_port=16818 # not Slurm's defaults, so a real slurmctld on this host is no matter
work=$(mktemp -d /dev/shm/lgslurm.XXXXXX)
chmod 711 "$work"               # munged (as munge) must reach its own directory inside
pids=()
jobid=
cleanup() {
  local status=$?
  set +e
  cd /
  [ -n "$jobid" ] && [ -n "${SLURM_CONF:-}" ] && timeout 5 scancel "$jobid" 2>/dev/null
  [ -e "$work/sampling" ] && rm -f "$work/sampling"
  for i in 1 2 3; do          # everything in our namespaces is ours: slurmd, slurmstepd, the job, the agents
    for pid in $(ip netns pids "${tag}n$i" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null; done
  done
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    for i in 1 2 3; do [ -n "$(ip netns pids "${tag}n$i" 2>/dev/null)" ] && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  for i in 1 2 3; do for pid in $(ip netns pids "${tag}n$i" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done; done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  wait 2>/dev/null
  for i in 1 2 3; do ip netns del "${tag}n$i" 2>/dev/null; done
  ip link del "$bridge" 2>/dev/null
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
logs() {
  set +e
  echo "--- slurmctld log"; tail -n 25 "$work/log/slurmctld.log" 2>/dev/null
  for i in 1 2 3; do echo "--- slurmd n$i log"; tail -n 15 "$work/log/slurmd.n$i.log" 2>/dev/null; done
  echo "--- munged log"; tail -n 5 "$work/log/munged.out" 2>/dev/null
  echo "--- job output"; cat "$work/job/job.out" 2>/dev/null
  echo "--- sbatch"; cat "$work/sbatch.out" 2>/dev/null
  true
}
fail() { echo "slurm: FAILED: $*"; logs; exit 1; }
wait_for() {  # wait_for SECONDS WHAT COMMAND...: polls every 0.2 s
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@"; do [ $SECONDS -lt $end ] || fail "$what (after ${limit}s)"; sleep 0.2; done
}
mkdir -p "$work"/{etc,log,state,spool/n1,spool/n2,spool/n3,munge,job,target,bin,home}
chmod 700 "$work/home"

# munge, a daemon of our own with a key of our own, on a socket of our own.
head -c 1024 /dev/urandom >"$work/munge/munge.key"
chown -R munge:munge "$work/munge"; chmod 755 "$work/munge"; chmod 400 "$work/munge/munge.key"
setpriv --reuid=munge --regid=munge --init-groups -- munged -F --socket="$work/munge/munge.socket" \
  --key-file="$work/munge/munge.key" --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" \
  --seed-file="$work/munge/munged.seed" >>"$work/log/munged.out" 2>&1 &
pids+=($!)
wait_for 10 "munged did not start" test -S "$work/munge/munge.socket"

# The network: a bridge in the root namespace (slurmctld's address), a namespace for each node.
ip link add "$bridge" type bridge
ip addr add "$net.1/24" dev "$bridge"
ip link set "$bridge" up
for i in 1 2 3; do
  ns=${tag}n$i
  ip netns add "$ns"
  ip link add "${tag}v$i" type veth peer name eth0 netns "$ns"
  ip link set "${tag}v$i" master "$bridge" up
  ip -n "$ns" addr add "$net.1$i/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
done

# slurm.conf: the settings slurmd needs in a namespace here (shared/research/slurm-in-netns.md), every path ours.
hw=$(slurmd -C | head -n 1 | grep -o -E '(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+' | paste -sd' ')
export SLURM_CONF=$work/etc/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=lgtest
SlurmctldHost=$(hostname -s)($net.1)
SlurmctldPort=$ctl_port
SlurmdPort=$node_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$work/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool/%n
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.%n.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SelectType=select/cons_tres
SchedulerType=sched/builtin
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SwitchType=switch/none
KillWait=5
InactiveLimit=0
NodeName=n1 NodeAddr=$net.11 $hw State=UNKNOWN
NodeName=n2 NodeAddr=$net.12 $hw State=UNKNOWN
NodeName=n3 NodeAddr=$net.13 $hw State=UNKNOWN
PartitionName=lgtest Nodes=n[1-3] Default=YES State=UP
EOF
slurmctld -D -f "$SLURM_CONF" >>"$work/log/slurmctld.out" 2>&1 &
pids+=($!)
for i in 1 2 3; do   # nsenter --net, not ip netns exec: that remounts /sys and hides the cgroup tree
  nsenter --net="/run/netns/${tag}n$i" slurmd -D -N "n$i" -f "$SLURM_CONF" >>"$work/log/slurmd.n$i.out" 2>&1 &
  pids+=($!)
done
all_idle() { [ "$(sinfo -h -N -o '%N %T' 2>/dev/null | sort -u | paste -sd' ')" = "n1 idle n2 idle n3 idle" ]; }
wait_for 30 "the three nodes did not come up idle: $(sinfo -h -N -o '%N %T' 2>&1 | paste -sd' ')" all_idle
echo "slurm: cluster up in $((SECONDS - started))s: slurmctld on $net.1, slurmd n1..n3 on $net.11-13"

# The job's view: loadgen on PATH only (a copy, so a rebuild cannot change it under the job), a home of its own.
cp "$LOADGEN" "$work/bin/loadgen"
secret_dir=$work/home/.loadgen

# The sampler: every process's command line and the secret directory's modes, all through the job.
touch "$work/sampling"
(
  umask 077
  end=$((SECONDS + 120))
  while [ -e "$work/sampling" ] && [ $SECONDS -lt $end ]; do
    { echo "=== sample"; ps -e -ww -o args=; } >>"$work/ps.samples"
    find "$secret_dir" -mindepth 1 -printf '%m %p\n' >>"$work/modes.samples" 2>/dev/null || true
    for f in "$secret_dir"/job-*/secret; do
      [ -f "$f" ] && [ "$(stat -c %s "$f")" = 64 ] && ! grep -qxFf "$f" "$work/secrets.seen" 2>/dev/null \
        && { cat "$f"; echo; } >>"$work/secrets.seen"
    done 2>/dev/null
    sleep 0.1
  done
) &
pids+=($!)

job_started=$SECONDS
# PATH and HOME for the job are ours; LOADGEN unset, so the script must find loadgen on PATH.
cd "$work/job"
env -u LOADGEN PATH="$work/bin:$PATH" HOME="$work/home" \
  LOADGEN_FILES=500 LOADGEN_SIZE=1k LOADGEN_MODES=threads,processes LOADGEN_AGENT_WAIT=30 \
  timeout 90 sbatch -N3 --wait --time=2 --output="$work/job/job.out" --parsable \
    "$SBATCH_SCRIPT" "$work/target" >"$work/sbatch.out" 2>&1 && status=0 || status=$?
jobid=$(head -n 1 "$work/sbatch.out" | grep -o -E '^[0-9]+' || true)
rm -f "$work/sampling"
job_took=$((SECONDS - job_started))
[ "$status" = 0 ] || fail "sbatch -N3 --wait exited $status (job ${jobid:-?}: $(scontrol show job "${jobid:-0}" 2>/dev/null \
  | grep -o -E 'JobState=[A-Z_]+|ExitCode=[0-9:]+' | paste -sd' '))"
state=$(scontrol show job "$jobid" 2>/dev/null | grep -o -E 'JobState=[A-Z_]+' || true)
[ "$state" = JobState=COMPLETED ] || fail "job $jobid ended ${state:-in an unknown state}"
jobid_done=$jobid; jobid=

# The report the job's output names: completed runs on n1, n2 and n3.
json=$(sed -n 's/^loadgen-slurm: report (one JSON object per run): //p' "$work/job/job.out")
[ "$json" = "$work/job/loadgen-$jobid_done.json" ] && [ -s "$json" ] \
  || fail "the job's output names no report in the job's directory, or it is empty (${json:-none})"
python3 - "$json" <<'PY' || fail "the report in $json"
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert len(runs) == 2, f"{len(runs)} runs, not 2 (threads, processes)"
for r in runs:
    assert r["status"] == "completed", r["status"]
    assert r["agents"] == 3, r["agents"]
    assert sorted(a["agent"] for a in r["per_agent"]) == ["n1", "n2", "n3"], [a["agent"] for a in r["per_agent"]]
    assert r["ops"] == 1500 == sum(a["ops"] for a in r["per_agent"]), r["ops"]
print(f"slurm: report: {len(runs)} runs ({', '.join(r['mode'] for r in runs)}), each completed on agents n1, n2, n3, "
      f"{runs[0]['ops']} files")
PY
grep -q "^loadgen-slurm: run store: $work/job/loadgen-runs.sqlite$" "$work/job/job.out" \
  && [ -s "$work/job/loadgen-runs.sqlite" ] || fail "the run store is not where the job's output says"

! grep -q -E '^srun: error|CANCELLED' "$work/job/job.out" || fail "the agents did not stop cleanly at the end of the job"

# Nothing left behind.
[ -z "$(ls -A "$work/target")" ] || fail "left in the target: $(ls -A "$work/target")"
[ -z "$(ls -A "$secret_dir" 2>/dev/null)" ] || fail "left in the secret directory: $(ls -A "$secret_dir")"

# The secret: seen by the sampler, never on a command line or in the output, never readable beyond its owner.
[ -s "$work/secrets.seen" ] || fail "the sampler never saw the job's secret file"
[ "$(wc -l <"$work/secrets.seen")" = 1 ] && [ "$(wc -c <"$work/secrets.seen")" = 65 ] \
  || fail "the secret is not one 64-digit line: $(wc -lc <"$work/secrets.seen")"
samples=$(grep -c '^=== sample$' "$work/ps.samples" || true)
[ "$samples" -ge 5 ] || fail "only $samples process samples during the job"
grep -q -- '--secret-file' "$work/ps.samples" || fail "the sampler never saw an agent or coordinator running"
! grep -qFf "$work/secrets.seen" "$work/ps.samples" || fail "the secret appeared on a process command line"
! grep -qFf "$work/secrets.seen" "$work/job/job.out" || fail "the secret appeared in the job's output"
bad=$(awk '$2 ~ /\/secret$/ && $1 != "600" || $2 ~ /\/job-[^\/]*$/ && $1 != "700"' "$work/modes.samples" | sort -u)
[ -z "$bad" ] || fail "the secret or its directory was readable beyond its owner: $bad"
grep -q '/secret$' "$work/modes.samples" || fail "the sampler never saw the secret file's mode"

{ grep -E '^loadgen-slurm: [0-9]+ agents' "$work/job/job.out"; tail -n 4 "$work/job/job.out"; } | sed 's/^/slurm: job: /'
echo "slurm: job $jobid_done on n1..n3 took ${job_took}s; $samples process samples: the secret never on a command line,"
echo "slurm: mode 600 in a 700 directory all along, nothing left in the target or the secret directory"
echo "slurm: ok ($((SECONDS - started))s)"
