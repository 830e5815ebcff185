#!/usr/bin/env bash
# uring-floor.sh: where loadgen's async (io_uring) writes stand between the machine's limit and what io_uring itself
# allows for file creation here.
#
#   usage (from the project root, after `swift build -c release`):  deploy/bench/uring-floor.sh [path/to/loadgen]
#   env: FILES=100000  DEPTH=64  SIZE=2  ROUNDS=5  THREADS=cores  ROOT=/dev/shm
#
# Each round, alternating, creates FILES files of SIZE bytes in a fresh directory with:
#   limit    ../shared/bench/cwrite.c: THREADS C threads doing open/write/close (write-vs-limit.sh's limit)
#   c-uring  uring-chain.c: DEPTH linked open/write/close chains on one ring in C, nothing else (io_uring's own cost)
#   loadgen  loadgen coordinate --mode async --workers DEPTH --keep --json (checked: ops == FILES, FILES on disk)
# O_CREAT opens cannot complete without blocking, so io_uring always hands them to its io-wq worker threads: a
# file's creation costs the thread-per-call work plus io_uring's hand-off. c-uring/limit is that ceiling here.
# Last line: "uring ratio loadgen/limit=R c-uring/limit=R loadgen/c-uring=R" (files per second, medians).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shared=$(cd "$here/../../../shared/bench" 2>/dev/null && pwd || true)
LOADGEN=${1:-.build/release/loadgen}
FILES=${FILES:-100000} DEPTH=${DEPTH:-64} SIZE=${SIZE:-2} ROUNDS=${ROUNDS:-5} ROOT=${ROOT:-/dev/shm}
THREADS=${THREADS:-$(nproc)}
[ -x "$LOADGEN" ] || { echo "no loadgen binary at $LOADGEN (build it: swift build -c release)"; exit 2; }
[ -n "$shared" ] && [ -f "$shared/cwrite.c" ] || { echo "../shared/bench/cwrite.c is needed beside the project"; exit 2; }
work=$(mktemp -d "$ROOT/lgfloor.XXXXXX"); export LOADGEN_DB="$work/runs.sqlite"; trap 'rm -rf "$work"' EXIT
cc -O2 -pthread -o "$work/cwrite" "$shared/cwrite.c"
# The C reference program uses liburing (loadgen itself does not): install it for this bench when it is missing.
if [ ! -f /usr/include/liburing.h ]; then
  if [ "$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liburing-dev >/dev/null
  else echo "uring-chain.c needs liburing-dev (apt-get install liburing-dev); loadgen does not"; exit 2; fi
fi
cc -O2 -o "$work/uring-chain" "$here/uring-chain.c" -luring
declare -A rates
add() { rates[$1]="${rates[$1]:-} $2"; }
for round in $(seq "$ROUNDS"); do
  d="$work/c$round"; out=$("$work/cwrite" "$d" "$FILES" "$THREADS" "$SIZE"); rm -rf "$d"
  add limit "$(sed -n 's/.*files_per_s=\([0-9.]*\).*/\1/p' <<<"$out")"

  d="$work/u$round"; mkdir -p "$d"; out=$("$work/uring-chain" "$d" "$FILES" "$DEPTH" "$SIZE"); rm -rf "$d"
  add c-uring "$(sed -n 's/.*files_per_s=\([0-9.]*\).*/\1/p' <<<"$out")"

  d="$work/l$round"; mkdir -p "$d"
  json=$("$LOADGEN" coordinate --target "$d" --files "$FILES" --size "$SIZE" --mode async --workers "$DEPTH" --keep --json | tail -n 1)
  on_disk=$(find "$d" -type f | wc -l); rm -rf "$d"
  read -r ops rate < <(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["ops"], j["ops_per_s"])' "$json")
  [ "$ops" = "$FILES" ] || { echo "loadgen reported ops=$ops, asked for $FILES"; exit 1; }
  [ "$on_disk" = "$FILES" ] || { echo "loadgen left $on_disk files on disk, asked for $FILES"; exit 1; }
  add loadgen "$rate"
done
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.0f}")' $1; }
for k in limit c-uring loadgen; do echo "$k files/s median $(median "${rates[$k]}")  (rounds:${rates[$k]})"; done
r() { python3 -c 'import sys,statistics as s; a=[float(x) for x in sys.argv[1].split()]; b=[float(x) for x in sys.argv[2].split()]; print(f"{s.median(a)/s.median(b):.2f}")' "${rates[$1]}" "${rates[$2]}"; }
echo "uring ratio loadgen/limit=$(r loadgen limit) c-uring/limit=$(r c-uring limit) loadgen/c-uring=$(r loadgen c-uring)"
