#!/usr/bin/env bash
# What a newcomer runs first, as the README writes it, on a machine whose default `java` may be older
# than 22: bin/hspmn finds a JDK 22+ itself (ci/java-home.sh), and ci/demo.sh's output is the demo's,
# not the build's (no build lines, no colour codes when not a terminal). Needs the jar (ci/test.sh runs
# it after the Maven build).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
fail() { echo "check-newcomer: FAILED: $*" >&2; exit 1; }

# PATH's java: a JDK older than 22 when the machine has one (the case the launcher is for), JAVA_HOME unset
old=""
for d in /usr/lib/jvm/*; do
  v=$("$d/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p' | cut -d. -f1 || true)
  if [[ -n $v && $v -lt 22 ]]; then old=$d/bin; break; fi
done
[[ -n $old ]] || echo "check-newcomer: no JDK older than 22 here; the launcher runs with the default PATH"
out=$(cd /tmp && env -u JAVA_HOME PATH="${old:+$old:}/usr/local/bin:/usr/bin:/bin" "$root/bin/hspmn" --help 2>&1) ||
  fail "bin/hspmn --help with ${old:-the default} java first on PATH: $out"
grep -q "train" <<<"$out" || fail "bin/hspmn --help printed no usage: $out"
out=$(env -u JAVA_HOME PATH="${old:+$old:}/usr/local/bin:/usr/bin:/bin" bin/hspmn sample --help 2>&1) ||
  fail "bin/hspmn sample --help: $out"
echo "check-newcomer: bin/hspmn runs with ${old:-the default java} first on PATH"

# the demo, its output piped (not a terminal): the demo's lines only, no escape codes
demo=$(bash ci/demo.sh --dim 64 --seq 64 --batch 1 --heads 2 --kv-heads 1 --backend cpu 2>&1) || fail "ci/demo.sh: $demo"
if grep -q $'\x1b' <<<"$demo"; then fail "ci/demo.sh printed colour codes: $demo"; fi
n=$(wc -l <<<"$demo")
(( n <= 30 )) || fail "ci/demo.sh printed $n lines (the build's output?): $demo"
if grep -qE '^\[ *[0-9]+%\]|WARNING|^-- ' <<<"$demo"; then fail "ci/demo.sh printed build output: $demo"; fi
echo "check-newcomer: ci/demo.sh printed $n lines, no build output, no colour codes"
