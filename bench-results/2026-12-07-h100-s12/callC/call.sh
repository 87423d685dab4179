#!/usr/bin/env bash
# Twelfth session, call C: the ci/gpu.sh stages that calls A and B did not run on the session's code (B ran
# the last code; what changed after it is comments), plus poisoned_cuda and streams_cuda as gpu.sh runs them.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
export HSPMN_GPU_BENCH=0
export HSPMN_GPU_STAGES="test_native test_model test_memory memory_cuda gpu_faults test_sample hspmn_cuda gemm_search hspmn_cuda_lm graph_cuda data_parallel_cuda goldens_cpu decode_step_cuda decode_graph_il_cuda sample_cuda dlpack_cuda triton_cuda poisoned_cuda streams_cuda"
timeout "${LIMIT:-480}" bash ci/gpu.sh > "$OUT/gpu.log" 2>&1
echo "gpu.sh rc $?"
[[ -f "$OUT/gpu-summary.txt" ]] || { tar -czf "$OUT/gpu-logs.tgz" -C build-gpu logs 2>/dev/null; echo "(no summary: cut short)"; }
grep -E "^=== .*: rc|^stage|ok$|FAIL|skipped" "$OUT/gpu.log" | grep -v "^=== .*: rc 0" | tail -45
