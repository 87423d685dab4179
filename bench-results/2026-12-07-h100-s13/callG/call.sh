#!/usr/bin/env bash
# Thirteenth session, call G: the default as committed (fused kernel in inference passes only): parity,
# the block beside the dense block, and the 4k inference per-kernel breakdown.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"; L="$OUT/l"; mkdir -p "$L"
T0=$SECONDS; BUDGET="${BUDGET:-250}"
left() { echo $((BUDGET - (SECONDS - T0))); }
mark() { echo "[$((SECONDS - T0)) s] $*"; }
pack() { tar -czf "$OUT/logs.tgz" -C "$OUT" l && rm -rf "$L"; }
trap pack EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee "$L/env.txt"
py=python3; b=build-gpu
cmake -S native -B $b -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON -DHSPMN_CUDA_ARCHS=90 "-DHSPMN_PYTHON=$py" > "$L/configure.log" 2>&1
cmake --build $b -j 16 --target hspmn > "$L/build.log" 2>&1 || { mark "build failed"; tail -30 "$L/build.log"; exit 1; }
mark "built"
chk() { local name=$1; shift; local t=$SECONDS; timeout 60 "$@" > "$L/$name.log" 2>&1; local rc=$?
  printf '%-14s rc %s  %3d s  %s\n' "$name" "$rc" $((SECONDS - t)) "$(tail -1 "$L/$name.log" | cut -c1-110)" | tee -a "$L/checks.txt"; }
chk swiglu_block $py native/reference/check_swiglu_gemm.py --lib $b/libhspmn.so
chk model_cuda $py native/reference/check_model.py --backend cuda --lib $b/libhspmn.so
mark block
timeout 40 $py native/bench/hspmn_block.py --mode all --iters 10 --lib $b/libhspmn.so --json "$L/block.json" 2>&1 | grep "tok/s"
(( $(left) > 60 )) && { mark dense; timeout 50 $py native/bench/dense_block.py --mode all --iters 10 --json "$L/dense.json" 2>&1 | grep "tok/s"; }
if (( $(left) > 25 )); then
  mark breakdown
  timeout $(( $(left) - 3 )) $py native/bench/kernel_breakdown.py --lib $b/libhspmn.so --json "$L/breakdown-infer.json" > "$L/bd-infer.log" 2>&1
  grep -E "swiglu|GEMM|gemm|breakdown summary|GPU time" "$L/bd-infer.log" | cut -c1-140 | head -14
fi
mark done
