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
  # TrainingTest's run (native/reference/experiments/router_fraction.md): at this size the block's default
  # router coefficients leave the no-noise routed fraction near 0; these put each layer near rho = 0.2
  set -- --data data/corpus.txt --out target/train-demo --dim 64 --layers 2 --heads 2 --kv-heads 1 \
         --seq-len 128 --batch 8 --steps 400 --lr 1e-2 --warmup 40 --eval-every 100 \
         --router-sparsity-coef 30 --router-entropy-coef 1
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
