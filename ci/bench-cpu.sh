#!/usr/bin/env bash
# JMH benchmarks on the CPU backend; results as JSON in jmh/target/jmh-result.json.
#   usage: ci/bench-cpu.sh [extra JMH args, e.g. -p seq=512 or a benchmark regex]
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/java-home.sh
mvn -B -ntp -q package -DskipTests
java -jar jmh/target/benchmarks.jar -rf json -rff jmh/target/jmh-result.json "$@"
echo "results: jmh/target/jmh-result.json"
