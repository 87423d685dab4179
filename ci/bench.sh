#!/usr/bin/env bash
# Builds the library and the jar (tests skipped), then runs the Java bench command (io.hspmn.bench.Bench)
# with the given arguments; native/bench/README.md lists them. On a machine without a GPU add --small.
#   usage: ci/bench.sh [--mode throughput|longctx|train|stress|all] [--backend auto|cpu|cuda] [--small]
#                      [--batch --seq --dim --heads --kv-heads --rho --routing --iters --warmup --json FILE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/build-jar.sh
exec java --enable-native-access=ALL-UNNAMED -cp "$HSPMN_CP" io.hspmn.bench.Bench "$@"
