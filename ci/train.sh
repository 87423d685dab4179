#!/usr/bin/env bash
# Builds the library and the jar (tests skipped), then trains a byte-level HSPMN language model with the
# CLI (`hspmn train`), verifies the checkpoint it wrote (`hspmn verify`) and continues a prompt with it
# (`hspmn sample`).
#   usage: ci/train.sh                      a small CPU-sized run on data/corpus.txt into target/train-demo
#          ci/train.sh TRAIN-OPTIONS...     your own run (--data and --out required; see ci/train.sh --help)
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/build-jar.sh
hspmn() { java --enable-native-access=ALL-UNNAMED -cp "$HSPMN_CP" io.hspmn.cli.Main "$@"; }

if [[ $# -eq 0 ]]; then
  rm -rf target/train-demo
  # TrainingTest's run (seed 1): every routing setting at its default; router bias control
  # (native/README.md "Router bias control") puts each layer's no-noise routed fraction near rho = 0.2
  set -- --data data/corpus.txt --out target/train-demo --dim 64 --layers 2 --heads 2 --kv-heads 1 \
         --seq-len 128 --batch 8 --steps 400 --eval-every 100 --eval-batches 24
fi
hspmn train "$@"

out=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --out) out="${args[i + 1]:-}" ;;
    --out=*) out="${args[i]#--out=}" ;;
    --help|-h) exit 0 ;;
  esac
done
hspmn verify "$out"
hspmn sample --ckpt "$out" --prompt "The " --max-new 120
