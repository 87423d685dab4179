#!/usr/bin/env bash
# Sourced by ci/demo.sh and ci/bench.sh: selects a JDK 22+, then builds the library and the application
# jar (java/hspmn and java/hspmn-app, tests skipped) so `java -cp "$HSPMN_CP" ...` runs. With a CUDA toolkit present the build also
# compiles the CUDA backend, whose attention kernels Triton compiles ahead of time: make the venv
# that has it first. Without nvcc, no Python is needed.
# Quiet unless HSPMN_VERBOSE=1: the build's output (CMake, nvcc, pip) goes to java/hspmn-app/target/build-jar.log,
# printed (without colour codes) only when the build fails.
source ci/java-home.sh
hspmn_build_jar() {
  if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then
    bash ci/venv.sh
  fi
  mvn -B -ntp -q -Dstyle.color=never -pl java/hspmn-app -am package -DskipTests
}
if [[ ${HSPMN_VERBOSE:-0} == 1 ]]; then
  hspmn_build_jar
else
  mkdir -p java/hspmn-app/target
  hspmn_build_log=$PWD/java/hspmn-app/target/build-jar.log
  echo "building the library and the jar (output in $hspmn_build_log; HSPMN_VERBOSE=1 shows it)" >&2
  if ! (unset CLICOLOR_FORCE; export NO_COLOR=1 CMAKE_COLOR_DIAGNOSTICS=OFF; hspmn_build_jar) >"$hspmn_build_log" 2>&1; then
    sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$hspmn_build_log" >&2
    echo "error: the build failed; its output is above and in $hspmn_build_log" >&2
    exit 1
  fi
fi
# the application jar; its lib/ holds the library jar and Gson
HSPMN_CP="java/hspmn-app/target/hspmn-app-0.1.0-SNAPSHOT.jar:java/hspmn-app/target/lib/*"
