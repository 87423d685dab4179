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
  # TrainingTest's run: stronger router coefficients than the block defaults, so that without noise each
  # layer routes close to rho = 0.2 at this size
  set -- --data data/corpus.txt --out target/train-demo --dim 64 --layers 2 --heads 4 --kv-heads 2 \
         --seq-len 128 --batch 8 --steps 400 --lr 5e-3 --warmup 50 --eval-every 100 \
         --router-sparsity-coef 2 --router-entropy-coef 0.1
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
