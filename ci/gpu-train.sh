#!/usr/bin/env bash
# On a GPU machine without a JDK: the `hspmn train` command (Java, the carried runtime and classes of
# ci/pack-carry.sh) on the CUDA backend with the library given as $1, at the paper's 1B shape
# (24 layers, D=2048, H=16, Hkv=4) on data/corpus.txt: a short run that shows the model trains from
# Java and what a step costs there. Extra arguments override the defaults. The checkpoint (17.5 GB:
# f32 weights and both AdamW moments) stays in build-gpu/train-1b; the metrics' last lines are printed.
#   usage: ci/gpu-train.sh path/to/libhspmn.so [train options]
set -euo pipefail
cd "$(dirname "$0")/.."
lib=$(readlink -f "$1"); shift
source ci/carry-env.sh
out=build-gpu/train-1b
rm -rf "$out"
"$CARRY_JAVA" --enable-native-access=ALL-UNNAMED -Dhspmn.library.path="$lib" \
  -cp "$CARRY_CP" io.hspmn.cli.Main train \
  --data data/corpus.txt --out "$out" --backend cuda --dim 2048 --layers 24 --heads 16 --kv-heads 4 \
  --seq-len 2048 --batch 8 --steps 30 --lr 3e-4 --warmup 10 --eval-every 0 --eval-batches 2 "$@"
echo "--- last metrics lines ($out/metrics.jsonl)"
tail -n 3 "$out/metrics.jsonl"
rm -rf "$out"/*.safetensors
