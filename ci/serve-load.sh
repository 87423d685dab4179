#!/usr/bin/env bash
# The HTTP service under load, end to end: starts `hspmn serve` as a process of its own (--port 0),
# waits until it listens, runs the load client (io.hspmn.serve.LoadClient: concurrent streamed
# /v1/generate requests) against it, then stops the server with SIGTERM and checks that it exits.
# Prints the server's first lines and the client's summary line (tok/s, p50/p99 time between tokens and
# to the first token, errors); the client's whole report goes to JSON_OUT, the server's log beside it.
#   usage: ci/serve-load.sh JSON_OUT [serve options] [-- load client options]
#   e.g.   ci/serve-load.sh build/serve-load.json --random --backend cpu -- --streams 4 --requests 2
#   env:   JAVA (a JDK 22+'s java, as ci/java-home.sh picks), HSPMN_CP (class path; unset: builds the jar as ci/demo.sh does), HSPMN_LIB (a
#          libhspmn.so to load instead of the jar's), SERVE_START_S (seconds to wait for the server: 600)
# Exit status: the load client's (0 only if every request succeeded), or 1 when the server did not
# start or did not stop on SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { sed -n '2,13p' "$0" >&2; exit 2; }
json=$1; shift
serve=()
while [[ $# -gt 0 && $1 != -- ]]; do serve+=("$1"); shift; done
[[ $# -gt 0 ]] && shift
load=("$@")
if [[ -z ${HSPMN_CP:-} ]]; then
  source ci/build-jar.sh
elif [[ -z ${JAVA:-} ]]; then
  source ci/java-home.sh
fi
java=${JAVA:-java}
jvm=(--enable-native-access=ALL-UNNAMED)
[[ -n ${HSPMN_LIB:-} ]] && jvm+=("-Dhspmn.library.path=$HSPMN_LIB")
mkdir -p "$(dirname "$json")"
log="${json%.json}-server.log"

: >"$log" # exists before the server starts, so the wait below can read it at once
"$java" "${jvm[@]}" -cp "$HSPMN_CP" io.hspmn.cli.Main serve --port 0 "${serve[@]}" >>"$log" 2>&1 &
pid=$!
stop_server() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
url=
for ((i = 0; i < ${SERVE_START_S:-600} * 10; i++)); do
  url=$(sed -n 's/^hspmn serve: listening on \(http:[^ ]*\) .*/\1/p' "$log" || true)
  [[ -n $url ]] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" && rc=0 || rc=$?
    echo "the server exited (status $rc) before it listened:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
if [[ -z $url ]]; then
  echo "the server did not listen within ${SERVE_START_S:-600} s:" >&2
  cat "$log" >&2
  stop_server
  exit 1
fi
head -n 2 "$log"

"$java" -cp "$HSPMN_CP" io.hspmn.serve.LoadClient --url "$url" --json "$json" "${load[@]}" && rc=0 || rc=$?

kill -TERM "$pid"
# SIGTERM: the shutdown hook closes the server and the JVM exits with 143
wait "$pid" && src=0 || src=$?
if [[ $src -ne 143 && $src -ne 0 ]]; then
  echo "the server exited with status $src after SIGTERM:" >&2
  tail -n 20 "$log" >&2
  [[ $rc -eq 0 ]] && rc=1
fi
echo "report: $json; server log: $log"
exit "$rc"
