#!/usr/bin/env bash
# Runs every test: native build (CMake), Java unit, parity, bad-input, leak and bindings tests.
#   usage: ci/test.sh [extra maven args]
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/java-home.sh
echo "using JDK at $JAVA_HOME ($(java -version 2>&1 | head -1))"
mvn -B -ntp verify "$@"
