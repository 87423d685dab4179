#!/usr/bin/env bash
# Packs what a GPU machine without Java needs to run the Java tests and benchmarks against a
# library built there: a small JRE, the compiled classes and test classes, Gson, the JUnit console
# launcher and the JMH jar. Everything lands in .carry/ (git-ignored); name .carry in the device
# tool's carry list. ci/gpu-java.sh unpacks and runs it there.
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/java-home.sh
mkdir -p .carry
# java.net.http: the HTTP service's tests talk to it with java.net.http.HttpClient
[[ -f .carry/jre.tgz ]] || EXTRA_MODULES=java.net.http bash ../shared/tools/make-jre.sh .carry/jre.tgz
junit=.carry/junit-platform-console-standalone-1.11.4.jar
[[ -f $junit ]] || mvn -B -ntp -q dependency:copy \
  -Dartifact=org.junit.platform:junit-platform-console-standalone:1.11.4 -DoutputDirectory=.carry
# package builds both modules' classes and test classes, target/lib (Gson) and the JMH jar
mvn -B -ntp -q -o package -DskipTests -Dhspmn.nativeBuildDir=${HSPMN_NATIVE_BUILD_DIR:-build}
# One classes/ and one test-classes/ for both modules (the library's and the applications' packages do
# not overlap), so the GPU scripts run a single class path; lib/ is the library's: Gson alone.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for d in classes test-classes; do
  mkdir -p "$stage/$d"
  cp -r java/hspmn/target/$d/. java/hspmn-app/target/$d/. "$stage/$d/"
done
cp -r java/hspmn/target/lib "$stage/lib"
cp jmh/target/benchmarks.jar "$stage/"
tar -czf .carry/java.tgz -C "$stage" classes test-classes lib benchmarks.jar
du -sh .carry/*
