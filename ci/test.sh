#!/usr/bin/env bash
# Runs every test: the Maven build (CMake builds libhspmn.so; JUnit runs the parity, sensitivity,
# bad-input, leak and bindings tests), the native C test program, and, when the reference's venv
# exists (ci/goldens.sh makes it), every golden case through the library from Python as well.
#   usage: ci/test.sh [extra maven args]
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/java-home.sh
echo "using JDK at $JAVA_HOME ($(java -version 2>&1 | head -1))"
mvn -B -ntp verify "$@"

build=java/target/native-build
ctest --test-dir "$build" --output-on-failure

if [[ -x .venv/bin/python ]] && .venv/bin/python -c 'import torch, safetensors' 2>/dev/null; then
  .venv/bin/python native/reference/check_native.py --lib "$build/libhspmn.so"
else
  echo "check_native.py skipped: no reference venv (run ci/goldens.sh once to make .venv)"
fi
