#!/usr/bin/env bash
# Eighteenth session, call C: dkdv back to its per-head loops (the packed walk was slower, call B); issue 12's
# table again beside the dense block, the training breakdown, the 1B LM step, checks.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; L="$OUT/l"; mkdir -p "$L"
T0=$SECONDS; BUDGET="${BUDGET:-400}"
left() { echo $((BUDGET - (SECONDS - T0))); }
mark() { echo "[$((SECONDS - T0)) s] $*"; }
pack() { tar -czf "$OUT/logs.tgz" -C "$OUT" l && rm -rf "$L"; }
trap pack EXIT
chk() { local name=$1; shift; local t=$SECONDS; timeout 150 "$@" > "$L/$name.log" 2>&1; local rc=$?
  printf "%-16s rc %d %4d s  %s\n" "$name" $rc $((SECONDS - t)) "$(tail -1 "$L/$name.log")" | tee -a "$L/checks.txt"; return $rc; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee "$L/env.txt"
py=python3; b=build-gpu
cmake -S native -B $b -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON -DHSPMN_CUDA_ARCHS=90 -DHSPMN_PYTHON=$py > "$L/configure.log" 2>&1
cmake --build $b -j 16 --target hspmn hspmn_lm_bench > "$L/build.log" 2>&1 || { mark "build failed"; exit 1; }
mark built
chk triton_cuda $py native/kernels/triton/gpu_check.py --no-bench --cubins $b/triton/sm90
blk() { local name=$1 mode=$2; shift 2; mark "block $name"; env "$@" timeout 80 $py native/bench/hspmn_block.py --mode $mode --iters 10 --lib $b/libhspmn.so --json "$L/block-$name.json" 2>&1 | grep "tok/s"; }
blk a all HSPMN_NOTHING=1
mark dense; timeout 90 $py native/bench/dense_block.py --mode all --iters 10 --json "$L/dense.json" 2>&1 | grep "tok/s"
blk b all HSPMN_NOTHING=1
blk c all HSPMN_NOTHING=1
mark "breakdown train"; timeout 90 $py native/bench/kernel_breakdown.py --train --lib $b/libhspmn.so --json "$L/breakdown-train.json" > "$L/breakdown-train.log" 2>&1; grep -E "^GPU|sqdk_attention_bwd" "$L/breakdown-train.log" | head -5
(( $(left) > 40 )) && { mark "lm"; timeout 60 $b/tools/hspmn_lm_bench --backend cuda --batch 8 --seq 2048 --steps 6 --warmup 2 --json "$L/lm.json" 2>&1 | tail -1; }
(( $(left) > 30 )) && chk model_cuda $py native/reference/check_model.py --backend cuda --lib $b/libhspmn.so
mark done; cat "$L/checks.txt"
