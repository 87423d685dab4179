#!/usr/bin/env bash
# Eighteenth session, call A: the conv backward in one pass and router.w's gradient in the pair norm's dw pass
# (their bits against the old kernels, their time in the training breakdown and the train row against
# HSPMN_CONV_BACKWARD_ONE_PASS=0 HSPMN_ROUTER_W_FOLD=0); issue 12's table with
# this tree's defaults (the one-read pair-norm kernel, aux_loss over many blocks, the one-pass conv
# backward), three HSPMN runs around the dense block; the 131k breakdown; the attention backward's tiles at
# the training shape (B=64 S=4096); the 1B LM step; checks.
# dkdv over the kv group's packed (slot, head) rows: its checks (triton_cuda) and times against the old kernel.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; L="$OUT/l"; mkdir -p "$L"
T0=$SECONDS; BUDGET="${BUDGET:-560}"
left() { echo $((BUDGET - (SECONDS - T0))); }
mark() { echo "[$((SECONDS - T0)) s] $*"; }
pack() { tar -czf "$OUT/logs.tgz" -C "$OUT" l && rm -rf "$L"; }
trap pack EXIT
chk() { local name=$1; shift; local t=$SECONDS; timeout 150 "$@" > "$L/$name.log" 2>&1; local rc=$?
  printf "%-16s rc %d %4d s  %s\n" "$name" $rc $((SECONDS - t)) "$(tail -1 "$L/$name.log")" | tee -a "$L/checks.txt"; return $rc; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee "$L/env.txt"
py=python3; b=build-gpu
cmake -S native -B $b -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON -DHSPMN_CUDA_ARCHS=90 -DHSPMN_PYTHON=$py > "$L/configure.log" 2>&1
cmake --build $b -j 16 --target hspmn hspmn_lm_bench test_backend_ops > "$L/build.log" 2>&1 || { mark "build failed"; grep -B2 -A8 error "$L/build.log" | head -40; exit 1; }
mark built
# The one-pass conv backward must give the two kernels' bits; if not, the rest of the call runs without it.
chk backend_ops $b/tests/test_backend_ops --require cuda || { export HSPMN_CONV_BACKWARD_ONE_PASS=0 HSPMN_ROUTER_W_FOLD=0; grep -iE "fail|differ" "$L/backend_ops.log" | head -8; }
chk triton_cuda $py native/kernels/triton/gpu_check.py --no-bench --cubins $b/triton/sm90
chk norm_resident $py native/reference/check_rms_norm_resident.py --lib $b/libhspmn.so
chk swiglu_block $py native/reference/check_swiglu_gemm.py --lib $b/libhspmn.so
blk() { local name=$1 mode=$2; shift 2; mark "block $name"; env "$@" timeout 80 $py native/bench/hspmn_block.py --mode $mode --iters 10 --lib $b/libhspmn.so --json "$L/block-$name.json" 2>&1 | grep "tok/s"; }
blk a all HSPMN_NOTHING=1
mark dense; timeout 90 $py native/bench/dense_block.py --mode all --iters 10 --json "$L/dense.json" 2>&1 | grep "tok/s"
blk b all HSPMN_NOTHING=1
blk c all HSPMN_NOTHING=1
# dkdv over the kv group's packed rows (this tree) against its per-head loops (the session's start, .carry/oldtri)
tune() { local dir=$1 name=$2; shift 2; timeout 100 $py $dir/tune_gpu.py --kernels dkdv "$@" > "$L/tune-$name.log" 2>&1; grep -E "dkdv|failed" "$L/tune-$name.log" | sed "s/^/$name /"; }
mark "dkdv new vs old"
tune native/kernels/triton new-4k --batch-seq 64x4096 --tiles 32x64x4x3 32x64x4x2 64x64x4x3 64x64x4x2 16x64x4x3 32x128x8x2 64x128x8x2 64x64x8x3
tune .carry/oldtri old-4k --batch-seq 64x4096 --tiles 32x64x4x3
tune native/kernels/triton new-long --seq 16384 131072 --tiles 32x64x4x3 64x64x4x3 32x128x8x2
tune .carry/oldtri old-long --seq 16384 131072 --tiles 32x64x4x3
blk old-a train HSPMN_CONV_BACKWARD_ONE_PASS=0 HSPMN_ROUTER_W_FOLD=0
blk new-a train HSPMN_NOTHING=1
blk old-b train HSPMN_CONV_BACKWARD_ONE_PASS=0 HSPMN_ROUTER_W_FOLD=0
blk new-b train HSPMN_NOTHING=1
for s in 1 0; do
  mark "breakdown train HSPMN_CONV_BACKWARD_ONE_PASS=$s HSPMN_ROUTER_W_FOLD=$s"
  HSPMN_CONV_BACKWARD_ONE_PASS=$s HSPMN_ROUTER_W_FOLD=$s timeout 90 $py native/bench/kernel_breakdown.py --train --lib $b/libhspmn.so --json "$L/breakdown-train-new$s.json" > "$L/breakdown-train-new$s.log" 2>&1
  grep -E "^GPU|causal_conv|rms_norm_pair_backward_dw|router_w" "$L/breakdown-train-new$s.log" | head -8
done
mark "lm"; timeout 60 $b/tools/hspmn_lm_bench --backend cuda --batch 8 --seq 2048 --steps 6 --warmup 2 --json "$L/lm.json" 2>&1 | tail -1
mark "breakdown 131k"; timeout 90 $py native/bench/kernel_breakdown.py --batch 1 --seq 131072 --lib $b/libhspmn.so --json "$L/breakdown-131k.json" > "$L/breakdown-131k.log" 2>&1; grep -E "^GPU|summary" "$L/breakdown-131k.log"
(( $(left) > 40 )) && chk cuda_vs_cpu $py native/reference/check_cuda_block.py --lib $b/libhspmn.so
(( $(left) > 20 )) && chk model_cuda $py native/reference/check_model.py --backend cuda --lib $b/libhspmn.so
(( $(left) > 20 )) && chk decode_cuda $py native/reference/check_decode.py --backend cuda --lib $b/libhspmn.so
mark done; cat "$L/checks.txt"
