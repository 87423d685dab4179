#!/usr/bin/env bash
# Builds the library and the jar (tests skipped), then starts the example HTTP service (`hspmn serve`).
#   usage: ci/serve.sh (--random | --ckpt PATH) [--port 8080 --host 127.0.0.1 ...]; --help lists all
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/build-jar.sh
exec java --enable-native-access=ALL-UNNAMED -cp "$HSPMN_CP" io.hspmn.cli.Main serve "$@"
