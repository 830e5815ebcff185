#!/usr/bin/env bash
# phases-vs-limit.sh: loadgen's create, stat, read and remove phases against the machine's limit for each (C threads
# making the same system calls: deploy/bench/cphases.c), side by side in one run; rounds alternate, medians quoted.
#
#   usage (from the project root, after `swift build -c release`):  deploy/bench/phases-vs-limit.sh [path/to/loadgen]
#   env: FILES=400000  WORKERS=2  ROUNDS=7  SIZE=2  MODE=threads  ROOT=/dev/shm (tmpfs: measures the code, not the disk)
#        (400,000 files: at 100,000 a stat phase lasts about 80 ms here, too short to time against the limit)
# Ratios are medians of each round's own ratio (the contenders run back to back within a round): on this machine the
# limit itself drifts by up to 1.4x between rounds, and a ratio of two medians taken in different minutes carries that
# drift; a paired ratio cancels most of it. Seven rounds: with three, a single slow minute still decides the median.
#
#   limit:   cphases DIR FILES WORKERS SIZE
#   loadgen: loadgen coordinate --target DIR --files FILES --size SIZE --phases create,stat,read,remove --mode MODE
#            --workers WORKERS --json      (each phase's files_per_s from the report's phases)
#   mdtest:  mpirun -np WORKERS $MDTEST -n FILES/WORKERS -F -w SIZE -e SIZE -d DIR   (one shared directory, as loadgen
#            and the limit use; when MDTEST names a binary:
#            build it from https://github.com/hpc/ior with libopenmpi-dev, openmpi-bin, autoconf and automake:
#            ./bootstrap && ./configure && make, then MDTEST=ior/src/mdtest)
# Honesty checks: every loadgen phase reports ops == FILES and no errors, and the run directory is gone at the end.
# Last lines: "phases ratio loadgen/limit create=R stat=R read=R remove=R" (files per second, medians of the rounds'
# ratios), and with MDTEST before it "phases ratio loadgen/mdtest create=R ...".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
LOADGEN=${1:-.build/release/loadgen}
FILES=${FILES:-400000} WORKERS=${WORKERS:-2} ROUNDS=${ROUNDS:-7} SIZE=${SIZE:-2} MODE=${MODE:-threads} ROOT=${ROOT:-/dev/shm}
[ -x "$LOADGEN" ] || { echo "no loadgen binary at $LOADGEN (build it: swift build -c release)"; exit 2; }
work=$(mktemp -d "$ROOT/lgphases.XXXXXX"); export LOADGEN_DB="$work/runs.sqlite"; trap 'rm -rf "$work"' EXIT
cc -O2 -pthread -o "$work/cphases" "$here/cphases.c"
declare -A rates
add() { rates[$1]="${rates[$1]:-} $2"; }
phases="create stat read remove"
for round in $(seq "$ROUNDS"); do
  out=$("$work/cphases" "$work/c$round" "$FILES" "$WORKERS" "$SIZE")
  for p in $phases; do add "limit_$p" "$(sed -n "s/.*phase=$p .*files_per_s=\([0-9.]*\).*/\1/p" <<<"$out")"; done
  if [ -n "${MDTEST:-}" ]; then
    d="$work/m$round"; mkdir -p "$d"
    out=$(mpirun --allow-run-as-root --oversubscribe -np "$WORKERS" "$MDTEST" -n $((FILES / WORKERS)) -F -w "$SIZE" -e "$SIZE" -d "$d")
    rm -rf "$d"
    for p in $phases; do
      label=$(case $p in create) echo creation;; stat) echo stat;; read) echo read;; remove) echo removal;; esac)
      add "mdtest_$p" "$(awk -v l="$label" '$1 == "File" && $2 == l {print $5}' <<<"$out")"
    done
  fi
  d="$work/l$round"; mkdir -p "$d"
  json=$("$LOADGEN" coordinate --target "$d" --files "$FILES" --size "$SIZE" --phases create,stat,read,remove \
         --mode "$MODE" --workers "$WORKERS" --json | tail -n 1)
  left=$(find "$d" -mindepth 1 | wc -l); rm -rf "$d"
  [ "$left" = 0 ] || { echo "loadgen left $left entries in its target"; exit 1; }
  while read -r p ops errs rate; do
    [ "$ops" = "$FILES" ] && [ "$errs" = 0 ] || { echo "loadgen's $p phase reported ops=$ops errors=$errs, asked for $FILES"; exit 1; }
    add "loadgen_$p" "$rate"
  done < <(python3 -c 'import json,sys; [print(p["phase"], p["ops"], p["errors"], p["ops_per_s"]) for p in json.loads(sys.argv[1])["phases"]]' "$json")
done
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.0f}")' $1; }
# The median of the rounds' ratios (round i of one contender against round i of the other).
ratio() { python3 -c 'import sys,statistics as s; a=[float(x) for x in sys.argv[1].split()]; b=[float(x) for x in sys.argv[2].split()]; print(f"{s.median(x / y for x, y in zip(a, b)):.2f}")' "$1" "$2"; }
if [ -n "${MDTEST:-}" ]; then
  line="phases ratio loadgen/mdtest"
  for p in $phases; do
    echo "$p: mdtest median $(median "${rates[mdtest_$p]}") files/s (rounds:${rates[mdtest_$p]})"
    line="$line $p=$(ratio "${rates[loadgen_$p]}" "${rates[mdtest_$p]}")"
  done
  echo "$line"
fi
line="phases ratio loadgen/limit"
for p in $phases; do
  echo "$p: limit median $(median "${rates[limit_$p]}") files/s (rounds:${rates[limit_$p]})  loadgen median $(median "${rates[loadgen_$p]}") (rounds:${rates[loadgen_$p]})"
  line="$line $p=$(ratio "${rates[loadgen_$p]}" "${rates[limit_$p]}")"
done
echo "$line"
