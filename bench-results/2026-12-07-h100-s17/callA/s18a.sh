#!/usr/bin/env bash
# For the eighteenth session's first call (written by the seventeenth, whose device starts were all refused,
# then loans paused): everything the seventeenth built and never ran on a GPU.
#  1. swiglu_backward_gemm (the gate/up kernel's backward launch: d_gate | d_up from the d_act GEMM's
#     epilogue): its test, its bench against cuBLASLt + swiglu_backward, the block with it bit for bit, the
#     block's train row and the 1B LM step with HSPMN_SWIGLU_BACKWARD_GEMM 0 / 1 interleaved;
#  2. the forward kernel's source now has three modes (and the hand-off phases in one register): its test;
#  3. aux_loss as per-chunk f64 partials (was one 1024-thread block, 1.07 ms of 160 in training): the per-op
#     suite (aux_loss cases against the CPU op) and check_cuda_block;
#  4. the pair-norm dx kernel that reads a row once (HSPMN_RMS_NORM_RESIDENT=1): the block bit for bit and
#     in the train row;
#  5. down_residual's settings (group x L2 hints, sixteenth session): its checks and --sweep.
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
cmake --build $b -j 16 --target hspmn hspmn_lm_bench swiglu_backward_gemm_cuda swiglu_gemm_cuda down_residual_cuda \
  test_backend_ops > "$L/build.log" 2>&1 || { mark "build failed"; grep -B2 -A8 error "$L/build.log" | head -40; exit 1; }
mark built
chk swiglu_bwd $b/tests/swiglu_backward_gemm_cuda
grep -E "^  d_(gate|up)" "$L/swiglu_bwd.log" | head -6; grep -iE "fail" "$L/swiglu_bwd.log" | head -6
chk backend_ops $b/tests/test_backend_ops --require cuda
chk cuda_vs_cpu $py native/reference/check_cuda_block.py --lib $b/libhspmn.so
mark bench; timeout 120 $b/tests/swiglu_backward_gemm_cuda --bench 2>&1 | tee "$L/bench-bwd.log" | grep "^bench"
chk swiglu_fwd $b/tests/swiglu_gemm_cuda
chk swiglu_block $py native/reference/check_swiglu_gemm.py --lib $b/libhspmn.so
grep -iE "fail" "$L/swiglu_block.log" | head -6
chk norm_resident $py native/reference/check_rms_norm_resident.py --lib $b/libhspmn.so
blk() { local name=$1; shift; mark "block $name"; env "$@" timeout 60 $py native/bench/hspmn_block.py --mode train --iters 10 --lib $b/libhspmn.so --json "$L/block-$name.json" 2>&1 | grep "tok/s"; }
blk off-a HSPMN_SWIGLU_BACKWARD_GEMM=0
blk bwd1-a HSPMN_SWIGLU_BACKWARD_GEMM=1
blk norm1-a HSPMN_RMS_NORM_RESIDENT=1
blk both-a HSPMN_SWIGLU_BACKWARD_GEMM=1 HSPMN_RMS_NORM_RESIDENT=1
blk off-b HSPMN_SWIGLU_BACKWARD_GEMM=0
blk bwd1-b HSPMN_SWIGLU_BACKWARD_GEMM=1
blk norm1-b HSPMN_RMS_NORM_RESIDENT=1
blk both-b HSPMN_SWIGLU_BACKWARD_GEMM=1 HSPMN_RMS_NORM_RESIDENT=1
for s in 0 1; do
  (( $(left) > 170 )) || break
  mark "lm HSPMN_SWIGLU_BACKWARD_GEMM=$s HSPMN_RMS_NORM_RESIDENT=$s"
  HSPMN_SWIGLU_BACKWARD_GEMM=$s HSPMN_RMS_NORM_RESIDENT=$s timeout 90 $b/tools/hspmn_lm_bench --backend cuda --batch 8 --seq 2048 --steps 6 --warmup 2 --json "$L/lm-both$s.json" 2>&1 | tail -1
done
(( $(left) > 40 )) && chk model_cuda $py native/reference/check_model.py --backend cuda --lib $b/libhspmn.so
if (( $(left) > 100 )); then
  chk down_residual $b/tests/down_residual_cuda
  (( $(left) > 50 )) && { mark sweep; timeout $(( $(left) - 10 )) $b/tests/down_residual_cuda --sweep 2>&1 | tee "$L/sweep.log" | grep sweep; }
fi
# Plan B of the fused backward (branch bwd-l2-prefetch: L2 prefetch of each tile's gate/up by the producer),
# its bench beside the main kernel's, if time is left.
if (( $(left) > 150 )); then
  mark "prefetch variant"; rm -rf /tmp/pf && mkdir -p /tmp/pf && cp -r native /tmp/pf/ && (cd /tmp/pf && patch -p1 -s < "$OLDPWD/.carry/bwd-l2-prefetch.patch") \
    && cmake -S /tmp/pf/native -B /tmp/pf/b -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON -DHSPMN_CUDA_ARCHS=90 -DHSPMN_PYTHON=$py > "$L/pf-configure.log" 2>&1 \
    && cmake --build /tmp/pf/b -j 16 --target swiglu_backward_gemm_cuda > "$L/pf-build.log" 2>&1 \
    && { chk pf_swiglu_bwd /tmp/pf/b/tests/swiglu_backward_gemm_cuda; (( $(left) > 40 )) && timeout $(( $(left) - 10 )) /tmp/pf/b/tests/swiglu_backward_gemm_cuda --bench 2>&1 | tee "$L/pf-bench.log" | grep "^bench"; }
fi
mark done; cat "$L/checks.txt"
