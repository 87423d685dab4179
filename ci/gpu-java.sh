#!/usr/bin/env bash
# On a GPU machine without a JDK: runs the whole JUnit suite (the gpu-tagged tests included and
# required) against the library given as $1, with the runtime and classes that ci/pack-carry.sh put
# in .carry/. Prints JUnit's summary; exit status is JUnit's.
#   usage: ci/gpu-java.sh path/to/libhspmn.so [extra junit console args]
set -euo pipefail
cd "$(dirname "$0")/.."
lib=$(readlink -f "$1"); shift
source ci/carry-env.sh
# From a module folder (java/hspmn), as Maven runs the tests (they find ../../data relative to it), and
# with every jar on the JVM's class path (tests that start a second JVM reuse java.class.path).
header="$PWD/native/include/hspmn.h"
goldens="$PWD/java/hspmn/src/test/resources/goldens"
cp="$CARRY_CP:$CARRY_WORK/java/test-classes:$PWD/.carry/junit-platform-console-standalone-1.11.4.jar"
cd java/hspmn
"$CARRY_JAVA" --enable-native-access=ALL-UNNAMED -Xss4m -Xmx8g \
  -Dhspmn.library.path="$lib" \
  -Dhspmn.test.header="$header" \
  -Dhspmn.test.goldens="$goldens" \
  -Dhspmn.test.requireGpu=true \
  -cp "$cp" org.junit.platform.console.ConsoleLauncher execute \
  --scan-class-path "$CARRY_WORK/java/test-classes" --details=tree --disable-banner "$@"
