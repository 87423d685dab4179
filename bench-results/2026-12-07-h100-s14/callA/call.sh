#!/usr/bin/env bash
# Fourteenth session, call A: swiglu_gemm's sm_90a kernel with the epilogue overlapped with the next
# tile's MMAs (4 stages, no hand-off), and the block without gate|up in fused inference.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"; L="$OUT/l"; mkdir -p "$L"
T0=$SECONDS; BUDGET="${BUDGET:-420}"
left() { echo $((BUDGET - (SECONDS - T0))); }
mark() { echo "[$((SECONDS - T0)) s] $*"; }
pack() { kill %1 2>/dev/null; tar -czf "$OUT/logs.tgz" -C "$OUT" l && rm -rf "$L"; }
trap pack EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee "$L/env.txt"
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_event_reasons.active --format=csv -lms 200 > "$L/smi.csv" 2>&1 &
py=python3; b=build-gpu
cmake -S native -B $b -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON -DHSPMN_CUDA_ARCHS=90 "-DHSPMN_PYTHON=$py" > "$L/configure.log" 2>&1
cmake --build $b -j 16 --target hspmn swiglu_gemm_cuda test_memory > "$L/build.log" 2>&1 || { mark "build failed"; tail -30 "$L/build.log"; exit 1; }
mark "built"
timeout 150 $b/tests/swiglu_gemm_cuda --bench > "$L/swiglu_gemm.log" 2>&1; echo "rc $?"
grep -E "bench|checks|FAIL" "$L/swiglu_gemm.log" | head -24
chk() { local name=$1; shift; local t=$SECONDS; timeout 200 "$@" > "$L/$name.log" 2>&1; local rc=$?
  printf '%-16s rc %s  %3d s  %s\n' "$name" "$rc" $((SECONDS - t)) "$(tail -1 "$L/$name.log" | cut -c1-110)" | tee -a "$L/checks.txt"; }
chk swiglu_block $py native/reference/check_swiglu_gemm.py --lib $b/libhspmn.so
for v in 0 "" 0 ""; do
  (( $(left) > 45 )) || break
  mark "block HSPMN_SWIGLU_GEMM=${v:-unset}"
  f="$L/block-${v:-unset}-$SECONDS"
  HSPMN_SWIGLU_GEMM=$v timeout $(( $(left) - 10 )) $py native/bench/hspmn_block.py --mode all --iters 10 --lib $b/libhspmn.so --json "$f.json" > "$f.log" 2>&1
  tail -4 "$f.log"
done
chk chunked_cuda $py native/reference/check_chunked.py --backend cuda --lib $b/libhspmn.so
chk test_memory $b/tests/test_memory
mark done
