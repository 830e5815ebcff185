#!/usr/bin/env bash
# generate.sh: regenerates Sources/LoadgenCore/Generated/frames.pb.swift from schemas/wire/frames.proto.
#
#   usage (from the project root): deploy/proto/generate.sh
#
# The generated Swift is committed, so neither a build nor CI needs protoc or the plugin. This script needs protoc
# (the protobuf-compiler package, or `pip install grpcio-tools`, which carries one) and builds swift-protobuf's
# protoc-gen-swift plugin, at the version Package.swift names, into .build/protoc-gen-swift (about a minute).
set -euo pipefail
version=$(sed -n 's|.*apple/swift-protobuf", exact: "\([0-9.]*\)".*|\1|p' Package.swift)
[ -n "$version" ] || { echo "Package.swift names no exact swift-protobuf version"; exit 2; }
plugin=.build/protoc-gen-swift/$version/.build/release/protoc-gen-swift
if [ ! -x "$plugin" ]; then
  rm -rf ".build/protoc-gen-swift/$version"
  mkdir -p .build/protoc-gen-swift
  git clone -q --depth 1 --branch "$version" https://github.com/apple/swift-protobuf ".build/protoc-gen-swift/$version"
  (cd ".build/protoc-gen-swift/$version" && swift build -c release --product protoc-gen-swift)
fi
if command -v protoc >/dev/null; then protoc=(protoc); else protoc=(python3 -m grpc_tools.protoc); fi
"${protoc[@]}" --plugin=protoc-gen-swift="$plugin" --proto_path=schemas/wire \
  --swift_out=Sources/LoadgenCore/Generated --swift_opt=Visibility=Internal --swift_opt=FileNaming=DropPath \
  schemas/wire/frames.proto
echo "generated Sources/LoadgenCore/Generated/frames.pb.swift with protoc-gen-swift $version"
