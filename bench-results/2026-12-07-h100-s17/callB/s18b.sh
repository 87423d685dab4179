#!/usr/bin/env bash
# Seventeenth session, call B: down_residual at its sweep's best setting (group 2, no L2 hints) in the block
# against the default path, the table beside the dense block, the LM step with the one-read norm kernel,
# and the fused backward's L2-prefetch variant if time is left.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; L="$OUT/l"; mkdir -p "$L"
T0=$SECONDS; BUDGET="${BUDGET:-480}"
left() { echo $((BUDGET - (SECONDS - T0))); }
mark() { echo "[$((SECONDS - T0)) s] $*"; }
pack() { tar -czf "$OUT/logs.tgz" -C "$OUT" l && rm -rf "$L"; }
trap pack EXIT
chk() { local name=$1; shift; local t=$SECONDS; timeout 150 "$@" > "$L/$name.log" 2>&1; local rc=$?
  printf "%-16s rc %d %4d s  %s\n" "$name" $rc $((SECONDS - t)) "$(tail -1 "$L/$name.log")" | tee -a "$L/checks.txt"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee "$L/env.txt"
py=python3; b=build-gpu
cmake -S native -B $b -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON -DHSPMN_CUDA_ARCHS=90 -DHSPMN_PYTHON=$py > "$L/configure.log" 2>&1
cmake --build $b -j 16 --target hspmn hspmn_lm_bench > "$L/build.log" 2>&1 || { mark "build failed"; exit 1; }
mark built
chk down_block env HSPMN_DOWN_RESIDUAL_GROUP=2 $py native/reference/check_down_residual.py --lib $b/libhspmn.so
blk() { local name=$1; shift; mark "block $name"; env "$@" timeout 80 $py native/bench/hspmn_block.py --mode all --iters 10 --lib $b/libhspmn.so --json "$L/block-$name.json" 2>&1 | grep "tok/s"; }
blk now-a HSPMN_NOTHING=1
blk down2-a HSPMN_DOWN_RESIDUAL=1 HSPMN_DOWN_RESIDUAL_GROUP=2
mark dense; timeout 80 $py native/bench/dense_block.py --mode all --iters 10 --json "$L/dense.json" 2>&1 | grep "tok/s"
blk now-b HSPMN_NOTHING=1
blk down2-b HSPMN_DOWN_RESIDUAL=1 HSPMN_DOWN_RESIDUAL_GROUP=2
for s in 0 1; do
  (( $(left) > 60 )) || break
  mark "lm HSPMN_RMS_NORM_RESIDENT=$s"
  HSPMN_RMS_NORM_RESIDENT=$s timeout 60 $b/tools/hspmn_lm_bench --backend cuda --batch 8 --seq 2048 --steps 6 --warmup 2 --json "$L/lm-norm$s.json" 2>&1 | tail -1
done
mark done; cat "$L/checks.txt"
