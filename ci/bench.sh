#!/usr/bin/env bash
# Builds the library and the jar (tests skipped), then runs the Java bench command (io.hspmn.bench.Bench)
# with the given arguments; native/bench/README.md lists them. On a machine without a GPU add --small.
#   usage: ci/bench.sh [--mode throughput|longctx|train|stress|all] [--backend auto|cpu|cuda] [--small]
#                      [--batch --seq --dim --heads --kv-heads --rho --routing --iters --warmup --json FILE ...]
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
  io.hspmn.bench.Bench "$@"
