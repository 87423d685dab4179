#!/usr/bin/env bash
# On a GPU machine without a JDK: the HTTP service under load on the CUDA backend (the carried runtime and
# classes of ci/pack-carry.sh, the library given as $1). `hspmn serve` runs a random model of the 1B
# shape (24 layers, D=2048, H=16, Hkv=4, F=8192, V=256; its fresh routers route almost nothing), 32
# sequences decoded together; 32 concurrent clients each stream 4 requests of 128 new tokens
# (temperature 0.8, top-k 40, top-p 0.95). Prints the client's summary line:
#   serve load: 32 streams x 4 requests x 128 tokens: 16384 tokens in T s = N tok/s; time between tokens
#   p50 .. ms p99 .. ms; first token p50 .. ms p99 .. ms; errors 0
# and writes the whole report (with the server's /health: mean decode batch) to $2 (JSON). Exit status
# non-zero if any request failed. Extra arguments go to the load client.
#   usage: ci/gpu-serve.sh path/to/libhspmn.so path/to/serve-load.json [load client options]
set -euo pipefail
cd "$(dirname "$0")/.."
lib=$(readlink -f "$1")
json=$2
shift 2
source ci/carry-env.sh
JAVA="$CARRY_JAVA" HSPMN_LIB="$lib" HSPMN_CP="$CARRY_CP" \
  bash ci/serve-load.sh "$json" --random --backend cuda --layers 24 --dim 2048 --heads 16 --kv-heads 4 --mlp-ratio 4 \
    --max-batch 32 --max-concurrent 64 --max-prompt-tokens 512 --max-new-tokens 256 \
    -- --streams 32 --requests 4 --new-tokens 128 --prompt-bytes 64 --warmup 2 "$@"
