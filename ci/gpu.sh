#!/usr/bin/env bash
# The CUDA backend on a GPU machine (the H200 device machine: nvcc, cuBLAS, python3 with torch and
# triton 3.6.0, cmake; no Java unless .carry/ brings a JRE). Run from the repository root:
#   bash ci/gpu.sh                 HSPMN_CUDA_ARCHS=90 by default; GPU_JOBS=<n> build jobs
# Stages: configure, build, test_native, hspmn_cuda (gemm + attention vs float64), graph_cuda (CUDA
# graphs through the ABI), golden parity
# through the CUDA backend, the same goldens through the CPU backend of the CUDA-built library, and
# the Java tests when ci/pack-carry.sh has filled .carry/, then the benchmarks (HSPMN_GPU_BENCH=0 skips them). A failed stage does not stop the
# later ones (they report their own failure); the exit status is non-zero if any stage failed.
# Logs go to build-gpu/logs (one per stage); when OUT is set they are also packed into
# $OUT/gpu-logs.tgz beside $OUT/gpu-summary.txt (two files: the device machine returns only a few).
# The summary table is printed last.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build=build-gpu
py="${HSPMN_PYTHON:-python3}"
archs="${HSPMN_CUDA_ARCHS:-90}"
jobs="${GPU_JOBS:-$(nproc)}"
logs="$build/logs"
mkdir -p "$logs"

names=()
results=()
times=()

# stage NAME CMD...: runs CMD with its output in $logs/NAME.log (and on the console), records the result.
stage() {
  local name="$1"
  shift
  echo "=== $name: $*"
  local t0=$SECONDS rc
  "$@" 2>&1 | tee "$logs/$name.log"
  rc=${PIPESTATUS[0]}
  names+=("$name")
  times+=("$((SECONDS - t0))")
  if [[ $rc -eq 0 ]]; then results+=("ok"); else results+=("FAIL (rc $rc)"); fi
  echo "=== $name: rc $rc"
  return 0
}

skip() {
  names+=("$1")
  times+=("0")
  results+=("skipped: $2")
  echo "=== $1: skipped: $2"
}

{
  echo "date: $(date -u)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  nvcc --version 2>&1 | tail -2
  cmake --version 2>&1 | head -1
  "$py" -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__)' 2>&1
  git log --oneline -1 2>/dev/null || true
} | tee "$logs/environment.log"

stage configure cmake -S native -B "$build" -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON "-DHSPMN_CUDA_ARCHS=$archs" \
  "-DHSPMN_PYTHON=$py"
stage build cmake --build "$build" -j "$jobs"
stage ldd_nm bash -c "ldd $build/libhspmn.so; ! ldd $build/libhspmn.so | grep -E 'libcuda|libcudart|libcublas' && \
  ! nm -D --defined-only $build/libhspmn.so | grep -v ' hspmn_' | grep -v '^$'"
stage test_native "$build/tests/test_native"
stage hspmn_cuda "$build/tests/hspmn_cuda"
stage graph_cuda "$build/tests/graph_cuda"
stage goldens_cuda "$py" native/reference/check_native.py --backend cuda --lib "$build/libhspmn.so"
stage goldens_cpu "$py" native/reference/check_native.py --backend cpu --lib "$build/libhspmn.so"
# every op and the whole block, CUDA against the CPU backend of the same library (head dims 64/128, S=20000)
stage cuda_vs_cpu "$py" native/src/cuda/kernels/check_cuda_block.py --lib "$build/libhspmn.so"

if [[ -f .carry/jre.tgz && -f .carry/java.tgz ]]; then
  # the whole JUnit suite against the CUDA-built library, gpu-tagged tests included and required
  stage java ci/gpu-java.sh "$build/libhspmn.so"
else
  skip java "no .carry/jre.tgz and .carry/java.tgz (run ci/pack-carry.sh on the development machine)"
fi

if [[ "${HSPMN_GPU_BENCH:-1}" == 1 ]]; then
  # the dense Llama-style baseline, measured in the same call as HSPMN (BENCHMARKS.md)
  stage bench_dense "$py" native/bench/dense_block.py --mode all --iters 10 --json "$logs/dense.json"
  stage bench_hspmn "$py" native/bench/hspmn_block.py --mode all --iters 10 --lib "$build/libhspmn.so" --json "$logs/hspmn.json"
  # the native bench command (C ABI only), the same modes plus stress
  stage bench_native "$build/tools/hspmn_bench" --backend cuda --mode all --iters 10 --json "$logs/hspmn-native.json"
  # what CUDA graphs save: ordinary forward vs replay, launch-bound (decode-sized) and at full size
  stage bench_graph bash -c "$build/tools/hspmn_bench --backend cuda --graph --batch 1 --seq 128 --iters 50 \
    --json $logs/hspmn-graph-small.json && $build/tools/hspmn_bench --backend cuda --graph --batch 8 --seq 4096 \
    --iters 20 --json $logs/hspmn-graph.json"
fi

failed=0
{
  echo
  printf '%-14s %-8s %s\n' stage seconds result
  for i in "${!names[@]}"; do
    printf '%-14s %-8s %s\n' "${names[$i]}" "${times[$i]}" "${results[$i]}"
    [[ "${results[$i]}" == FAIL* ]] && failed=1
  done
  echo "logs: $logs${OUT:+ (packed in $OUT/gpu-logs.tgz)}"
} | tee "$logs/summary.txt"
if [[ -n "${OUT:-}" ]]; then
  cp "$logs/summary.txt" "$OUT/gpu-summary.txt"
  tar -czf "$OUT/gpu-logs.tgz" -C "$build" logs
fi
for r in "${results[@]}"; do [[ "$r" == FAIL* ]] && failed=1; done
exit "$failed"
