#!/usr/bin/env bash
# Seventeenth session, call C: the training breakdown with and without the one-read pair-norm kernel
# (its kernel time directly), then the fused backward's L2-prefetch variant (branch bwd-l2-prefetch) against
# the main kernel and the unfused path.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; L="$OUT/l"; mkdir -p "$L"
T0=$SECONDS; BUDGET="${BUDGET:-380}"
left() { echo $((BUDGET - (SECONDS - T0))); }
mark() { echo "[$((SECONDS - T0)) s] $*"; }
pack() { tar -czf "$OUT/logs.tgz" -C "$OUT" l && rm -rf "$L"; }
trap pack EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee "$L/env.txt"
py=python3; b=build-gpu
cmake --build $b -j 16 --target hspmn swiglu_backward_gemm_cuda > "$L/build.log" 2>&1 || { mark "build failed"; exit 1; }
mark built
for s in 0 1; do
  mark "breakdown train HSPMN_RMS_NORM_RESIDENT=$s"
  HSPMN_RMS_NORM_RESIDENT=$s timeout 90 $py native/bench/kernel_breakdown.py --train --lib $b/libhspmn.so --json "$L/breakdown-train-norm$s.json" > "$L/breakdown-train-norm$s.log" 2>&1
  grep -E "rms_norm_pair_backward|gpu_ms|GPU" "$L/breakdown-train-norm$s.log" | head -6
done
if (( $(left) > 150 )); then
  mark "prefetch variant"; rm -rf /tmp/pf && mkdir -p /tmp/pf && cp -r native /tmp/pf/ && rm -rf /tmp/pf/native/build && (cd /tmp/pf && patch -p1 -s < "$OLDPWD/.carry/bwd-l2-prefetch.patch") \
    && cmake -S /tmp/pf/native -B /tmp/pf/b -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON -DHSPMN_CUDA_ARCHS=90 -DHSPMN_PYTHON=$py > "$L/pf-configure.log" 2>&1 \
    && cmake --build /tmp/pf/b -j 16 --target swiglu_backward_gemm_cuda > "$L/pf-build.log" 2>&1 \
    && { mark "pf built"; timeout 60 /tmp/pf/b/tests/swiglu_backward_gemm_cuda > "$L/pf-check.log" 2>&1; tail -1 "$L/pf-check.log";
         (( $(left) > 40 )) && timeout $(( $(left) - 10 )) /tmp/pf/b/tests/swiglu_backward_gemm_cuda --bench 2>&1 | tee "$L/pf-bench.log" | grep "^bench"; }
fi
mark done
