#!/usr/bin/env bash
# Sourced by ci/demo.sh and ci/bench.sh: selects a JDK 22+, then builds the library and the jar
# (tests skipped) so `java -cp "$HSPMN_CP" ...` runs. With a CUDA toolkit present the build also
# compiles the CUDA backend, whose attention kernels Triton compiles ahead of time: make the venv
# that has it first. Without nvcc, no Python is needed.
source ci/java-home.sh
if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then
  bash ci/venv.sh
fi
mvn -B -ntp -q -pl java -am package -DskipTests
HSPMN_CP="java/target/hspmn-0.1.0-SNAPSHOT.jar:java/target/lib/*"
