#!/usr/bin/env bash
# Prepared by the fifteenth session for the next: main's tree (4-stage gate/up kernel; down_residual off).
# 1. issue 12's table in one call: this tree's block beside the dense block (call C of the fifteenth session
#    timed out before dense_block.py); 2. the training forward with the fused kernel (HSPMN_SWIGLU_GEMM=1):
#    the block's train row and the 1B LM step against the default; 3. the per-kernel breakdown at B=64 S=4096;
#    4. the base (b9dcfdc, the 3-stage kernel) block if time is left.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"; L="$OUT/l"; mkdir -p "$L"
T0=$SECONDS; BUDGET="${BUDGET:-560}"
left() { echo $((BUDGET - (SECONDS - T0))); }
mark() { echo "[$((SECONDS - T0)) s] $*"; }
pack() { tar -czf "$OUT/logs.tgz" -C "$OUT" l && rm -rf "$L"; }
trap pack EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee "$L/env.txt"
py=python3; b=build-gpu
HSPMN_NEW_BUILD=$b HSPMN_COMPARE_BUILD_ONLY=1 bash ci/gpu-compare.sh .carry/base-s16.tgz > "$L/base-build.log" 2>&1 &
BASE=$!
cmake -S native -B $b -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON -DHSPMN_CUDA_ARCHS=90 "-DHSPMN_PYTHON=$py" > "$L/configure.log" 2>&1
cmake --build $b -j 16 --target hspmn hspmn_lm_bench > "$L/build.log" 2>&1 || { mark "build failed"; grep -B2 -A8 error "$L/build.log" | head -40; exit 1; }
mark built
blk() { local name=$1; shift; mark "block $name"; env "$@" timeout 90 $py native/bench/hspmn_block.py --mode all --iters 10 --lib $b/libhspmn.so --json "$L/block-$name.json" 2>&1 | grep "tok/s"; }
blk now HSPMN_NOTHING=1
mark dense; timeout 150 $py native/bench/dense_block.py --mode all --iters 10 --json "$L/dense.json" 2>&1 | grep -E "tok/s|dense" | tail -6
blk now-again HSPMN_NOTHING=1
blk swiglu-train HSPMN_SWIGLU_GEMM=1
for s in unset 1; do
  mark "lm HSPMN_SWIGLU_GEMM=$s"
  ( [[ $s == 1 ]] && export HSPMN_SWIGLU_GEMM=1; timeout 120 $b/tools/hspmn_lm_bench --backend cuda --batch 8 --seq 2048 --steps 6 --warmup 2 --json "$L/lm-$s.json" 2>&1 | tail -2 )
done
if (( $(left) > 90 )); then
  mark breakdown; timeout 80 $py native/bench/kernel_breakdown.py --lib $b/libhspmn.so --json "$L/breakdown-infer.json" 2>&1 | grep -E "^breakdown|^ " | head -30
fi
wait $BASE
if (( $(left) > 40 )); then
  mark "base block"; timeout $(( $(left) - 5 )) $py build-compare/base-src/native/bench/hspmn_block.py --mode all --iters 10 --lib build-compare/base/libhspmn.so --json "$L/block-base.json" 2>&1 | grep "tok/s"
fi
mark done
