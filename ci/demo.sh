#!/usr/bin/env bash
# Builds the library and the jar (tests skipped), then runs the demo: a block forward and backward
# on random data, printing shapes, timings and the routed fraction.
#   usage: ci/demo.sh [--dim 256 --seq 512 --batch 2 --heads 4 --kv-heads 2 --rho 0.2
#                      --routing topk|threshold --backend auto|cpu|cuda --seed 1]
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/build-jar.sh
exec java --enable-native-access=ALL-UNNAMED -cp "$HSPMN_CP" io.hspmn.demo.Demo "$@"
