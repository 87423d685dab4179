#!/usr/bin/env bash
# Builds the library and the jar (tests skipped), then runs the demo: a block forward and backward
# on random data, printing shapes, timings and the routed fraction.
#   usage: ci/demo.sh [--dim 256 --seq 512 --batch 2 --heads 4 --kv-heads 2 --rho 0.2
#                      --routing topk|threshold --backend auto|cpu|cuda --seed 1]
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/java-home.sh
# With a CUDA toolkit present the build also compiles the CUDA backend, whose attention kernels
# Triton compiles ahead of time: make the venv that has it. Without nvcc, no Python is needed.
if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then
  bash ci/venv.sh
fi
mvn -B -ntp -q -pl java -am package -DskipTests
exec java --enable-native-access=ALL-UNNAMED -cp "java/target/hspmn-0.1.0-SNAPSHOT.jar:java/target/lib/*" \
  io.hspmn.demo.Demo "$@"
