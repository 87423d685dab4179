#!/usr/bin/env bash
# A JVM service needs the library jar (java/hspmn) and Gson, nothing of hspmn-app: compiles
# java/examples/EmbeddedService.java against exactly those two jars and runs it with exactly them on the
# class path (the jar's bundled libhspmn.so, no library path set). It loads a checkpoint and generates
# through the Engine, so it fails if the library needs an application class. Also fails when the jar
# holds an application package or the library gains a runtime dependency besides Gson.
# The class path is the library jar and the Gson jar: not even Gson's annotations jar.
# Needs the library jar (ci/test.sh runs it after the Maven build).
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/java-home.sh
fail() { echo "check-library-alone: FAILED: $*" >&2; exit 1; }
jar=java/hspmn/target/hspmn-0.1.0-SNAPSHOT.jar
[[ -f $jar ]] || { echo "no $jar: build it first (mvn -B -ntp -q -pl java/hspmn package -DskipTests)" >&2; exit 2; }
# target/lib holds the runtime dependencies: Gson and the annotations Gson's own pom brings, nothing else
deps=$(ls java/hspmn/target/lib)
others=$(grep -vE '^(gson|error_prone_annotations)-[0-9.]+\.jar$' <<<"$deps" || true)
[[ -z $others ]] || fail "the library depends on more than Gson: $others"
gson=$(ls java/hspmn/target/lib/gson-*.jar)
app=$(jar tf "$jar" | grep -E '^io/hspmn/(cli|args|train|eval|data|metrics|serve|bench|demo)/' || true)
[[ -z $app ]] || fail "$jar holds application classes: $(head -3 <<<"$app")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
javac --release 22 -cp "$jar:$gson" -d "$work/classes" java/examples/EmbeddedService.java ||
  fail "EmbeddedService does not compile against $jar and Gson alone"
java --enable-native-access=ALL-UNNAMED -cp "$work/classes:$jar:$gson" EmbeddedService "$work" ||
  fail "EmbeddedService failed on $jar and Gson alone"
echo "check-library-alone: a service compiled and generated on $(basename "$jar") and $(basename "$gson") alone"
