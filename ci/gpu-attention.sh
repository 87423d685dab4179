#!/usr/bin/env bash
# Issue 12.3, the SQDK attention at long context, in one device call (after ci/gpu.sh built build-gpu):
# timings of this tree's Triton kernels beside a base tree's (the launchers of both, same inputs, same
# GPU) at the block's shape (B=1, H=16, Hkv=4, Dh=128, rho=0.2) for S in HSPMN_ATTN_SEQ, then each
# kernel alone for its candidate tiles (tune_gpu.py) at HSPMN_ATTN_TUNE_SEQ. Logs under $OUT (or
# build-gpu/logs).
#   git archive <base> native | gzip > .carry/base-native.tgz      (on the development machine)
#   bash ci/gpu-attention.sh [.carry/base-native.tgz]               (on the GPU machine)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py="${HSPMN_PYTHON:-python3}"
out="${OUT:-build-gpu/logs}"
mkdir -p "$out"
base_tgz="${1:-.carry/base-native.tgz}"
base_args=()
if [[ -f "$base_tgz" ]]; then
  [[ -d build-compare/base-src/native ]] || { mkdir -p build-compare/base-src && tar -xzf "$base_tgz" -C build-compare/base-src; }
  base_args=(--base build-compare/base-src/native/kernels/triton)
fi
rc=0
timeout "${HSPMN_ATTN_BENCH_TIMEOUT:-120}" "$py" native/kernels/triton/gpu_check.py --bench-only \
  --seq ${HSPMN_ATTN_SEQ:-16384 65536 131072} "${base_args[@]}" 2>&1 | tee "$out/attention-bench.log" || rc=1
if [[ -n "${HSPMN_ATTN_TUNE_SEQ-131072}" ]]; then
  timeout "${HSPMN_ATTN_TUNE_TIMEOUT:-150}" "$py" native/kernels/triton/tune_gpu.py --dh 128 \
    --seq ${HSPMN_ATTN_TUNE_SEQ-131072} 2>&1 | tee "$out/attention-tune.log" || rc=1
fi
exit $rc
