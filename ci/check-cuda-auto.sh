#!/usr/bin/env bash
# -DHSPMN_CUDA=AUTO on a machine with nvcc but without the CUDA backend's other build prerequisites
# (a fresh clone before ci/venv.sh: no .venv, so no cublasLt.h wheel and no Triton) configures a
# CPU-only build and says why; -DHSPMN_CUDA=ON there stops with the same reason. Configure only (seconds).
# Run by ci/test.sh; skipped where there is no nvcc.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null 2>&1 && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  echo "check-cuda-auto: skipped (no nvcc)"; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/clone"
tar -C . --exclude='native/build*' -cf - native | tar -C "$tmp/clone" -xf - # a tree with no .venv beside it
# Pin the prerequisites to ones that are surely absent, so the check also holds where the toolkit ships cublasLt.h.
absent=(-DHSPMN_CUBLASLT_INCLUDE_DIR="$tmp/none" -DHSPMN_PYTHON="$tmp/none/python")
fail() { echo "check-cuda-auto: FAILED: $1 (log follows)" >&2; cat "$2" >&2; exit 1; }

if ! cmake -S "$tmp/clone/native" -B "$tmp/auto" -DHSPMN_BUILD_TESTS=OFF "${absent[@]}" >"$tmp/auto.log" 2>&1; then
  fail "HSPMN_CUDA=AUTO did not configure" "$tmp/auto.log"
fi
grep -q "building CPU-only" "$tmp/auto.log" || fail "AUTO did not say it builds CPU-only" "$tmp/auto.log"
grep -q "cublasLt.h not found" "$tmp/auto.log" || fail "AUTO did not name cublasLt.h" "$tmp/auto.log"
grep -q "Triton is not importable" "$tmp/auto.log" || fail "AUTO did not name Triton" "$tmp/auto.log"
grep -q "hspmn: CUDA backend OFF (HSPMN_CUDA=AUTO)" "$tmp/auto.log" || fail "AUTO did not turn the backend off" "$tmp/auto.log"
# and the fresh clone as it is (no -D): whatever is missing, it configures
cmake -S "$tmp/clone/native" -B "$tmp/plain" -DHSPMN_BUILD_TESTS=OFF >"$tmp/plain.log" 2>&1 ||
  fail "a fresh clone's default configure failed" "$tmp/plain.log"

if cmake -S "$tmp/clone/native" -B "$tmp/on" -DHSPMN_BUILD_TESTS=OFF -DHSPMN_CUDA=ON "${absent[@]}" >"$tmp/on.log" 2>&1; then
  fail "HSPMN_CUDA=ON configured without cublasLt.h" "$tmp/on.log"
fi
grep -q "HSPMN_CUDA=ON but the CUDA backend cannot be built: cublasLt.h not found" "$tmp/on.log" ||
  fail "ON did not say why it stopped" "$tmp/on.log"
echo "check-cuda-auto: OK (AUTO without cublasLt.h / Triton builds CPU-only and says why; ON stops)"
