#!/bin/sh
# One file to copy to an agent host: loadgen built with the Swift runtime, libstdc++ and libgcc's unwinder linked
# in, so `ldd` lists only glibc, SQLite and OpenSSL (which every host that runs loadgen has: apt-get install
# libsqlite3-0 libssl3). Extra arguments go to `swift build` (say, --scratch-path DIR).
#
# --static-swift-stdlib alone leaves libstdc++.so.6 and libgcc_s.so.1 in ldd: the static Swift runtime's link line
# names -lstdc++ and clang adds -lgcc_s. Two one-line linker scripts, found first on the library path, turn each of
# those into the toolchain's static archive.
set -eu
cd "$(dirname "$0")/../.."
dir="$PWD/.build/static-link"
mkdir -p "$dir"
echo "INPUT($(clang -print-file-name=libstdc++.a))" > "$dir/libstdc++.so"
echo "INPUT($(clang -print-file-name=libgcc_eh.a))" > "$dir/libgcc_s.so"
swift build -c release --static-swift-stdlib --product loadgen -Xlinker -L"$dir" "$@"
bin="$(swift build -c release --static-swift-stdlib --show-bin-path "$@")/loadgen"
echo "$bin:"
ldd "$bin"
