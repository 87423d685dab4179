#!/usr/bin/env bash
# Fifteenth session, call B: this tree (s15-hh: the half-hand-off 4-stage swiglu kernel + down_residual, both
# inference defaults) against main (base-s15.tgz = 036abb9, kernel-wise main's head): the kernels' tests and
# benches (swiglu: this tree and main; down_residual), the block checks, then issue 12's table (this tree,
# base, dense) and this tree's block with HSPMN_DOWN_RESIDUAL=0 (the two changes apart).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"; L="$OUT/l"; mkdir -p "$L"
T0=$SECONDS; BUDGET="${BUDGET:-560}"
left() { echo $((BUDGET - (SECONDS - T0))); }
mark() { echo "[$((SECONDS - T0)) s] $*"; }
pack() { cp build-compare/compare/*.json "$L/" 2>/dev/null; tar -czf "$OUT/logs.tgz" -C "$OUT" l && rm -rf "$L"; }
trap pack EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee "$L/env.txt"
py=python3; b=build-gpu
HSPMN_NEW_BUILD=$b HSPMN_COMPARE_BUILD_ONLY=1 bash ci/gpu-compare.sh .carry/base-s15.tgz > "$L/base-build.log" 2>&1 &
BASE=$!
cmake -S native -B $b -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON -DHSPMN_CUDA_ARCHS=90 "-DHSPMN_PYTHON=$py" > "$L/configure.log" 2>&1
cmake --build $b -j 16 --target hspmn swiglu_gemm_cuda down_residual_cuda test_memory > "$L/build.log" 2>&1 || { mark "build failed"; grep -B2 -A8 "error" "$L/build.log" | head -60; exit 1; }
mark "built"
chk() { local name=$1; shift; local t=$SECONDS; timeout 150 "$@" > "$L/$name.log" 2>&1; local rc=$?
  printf '%-16s rc %s  %3d s  %s\n' "$name" "$rc" $((SECONDS - t)) "$(tail -1 "$L/$name.log" | cut -c1-110)" | tee -a "$L/checks.txt"; }
chk down_residual $b/tests/down_residual_cuda --bench
grep -E "differ|bench|FAIL" "$L/down_residual.log" | head -40
chk down_block $py native/reference/check_down_residual.py --lib $b/libhspmn.so
grep -E "FAIL" "$L/down_block.log" | head -5
chk swiglu_gemm $b/tests/swiglu_gemm_cuda --bench
grep -E "bench|FAIL" "$L/swiglu_gemm.log" | grep -v triton | head -12
chk swiglu_block $py native/reference/check_swiglu_gemm.py --lib $b/libhspmn.so
chk chunked_cuda $py native/reference/check_chunked.py --backend cuda --lib $b/libhspmn.so
chk cuda_vs_cpu $py native/reference/check_cuda_block.py --lib $b/libhspmn.so
chk model_cuda $py native/reference/check_model.py --backend cuda --lib $b/libhspmn.so
chk decode_cuda $py native/reference/check_decode.py --backend cuda --lib $b/libhspmn.so
chk test_memory $b/tests/test_memory
grep -h "FAIL" "$L"/*.log | head -8
wait $BASE; mark "base build rc $?"; tail -2 "$L/base-build.log"
if (( $(left) > 120 )); then
  mark compare
  HSPMN_NEW_BUILD=$b HSPMN_COMPARE="block dense" timeout $(( $(left) - 45 )) bash ci/gpu-compare.sh .carry/base-s15.tgz > "$L/compare.log" 2>&1
  mark "compare rc $?"; grep -E "tok/s|^== " "$L/compare.log" | cut -c1-160
fi
if (( $(left) > 40 )); then
  mark "this tree, HSPMN_DOWN_RESIDUAL=0"
  HSPMN_DOWN_RESIDUAL=0 timeout $(( $(left) - 5 )) $py native/bench/hspmn_block.py --mode all --iters 10 --lib $b/libhspmn.so --json "$L/block-down0.json" 2>&1 | grep "tok/s"
fi
mark done
