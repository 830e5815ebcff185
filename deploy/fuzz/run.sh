#!/bin/sh
# Fuzzes loadgen's decoders and parsers with libFuzzer (ASan on): deploy/fuzz/run.sh TARGET [SECONDS] [JOBS]
#
# TARGET: frames, messages, http, request, parsers (see Sources/LoadgenFuzz). The corpus is Tests/Fuzz/corpus/TARGET
# (seeds committed, new inputs added as libFuzzer finds them); a crash is written to Tests/Fuzz/crashes/TARGET/,
# where the ordinary tests replay it (FuzzReplayTests) once it is fixed. Merge a grown corpus back to a small one
# with: .build/fuzz/debug/loadgen-fuzz -merge=1 DIR_SMALL DIR_BIG (LOADGEN_FUZZ_TARGET set).
set -eu
cd "$(dirname "$0")/../.."
target=${1:?usage: deploy/fuzz/run.sh TARGET [SECONDS] [JOBS]}
seconds=${2:-600}
swift build --product loadgen-fuzz --scratch-path .build/fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING
mkdir -p "Tests/Fuzz/corpus/$target" "Tests/Fuzz/crashes/$target"
LOADGEN_FUZZ_TARGET=$target exec .build/fuzz/debug/loadgen-fuzz -max_total_time="$seconds" -rss_limit_mb=2048 \
  -max_len=65536 -artifact_prefix="Tests/Fuzz/crashes/$target/" -print_final_stats=1 "Tests/Fuzz/corpus/$target"
