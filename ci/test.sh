#!/usr/bin/env bash
# Runs every test: the Maven build (CMake builds libhspmn.so; JUnit runs the parity, sensitivity,
# bad-input, leak and bindings tests), the native C test programs, and every golden case through the
# library from Python as well.
#   usage: ci/test.sh [extra maven args]
set -euo pipefail
cd "$(dirname "$0")/.."
source ci/java-home.sh
# torch for the Python golden check; triton and cublasLt.h for the CUDA build when nvcc is present
bash ci/venv.sh
echo "using JDK at $JAVA_HOME ($(java -version 2>&1 | head -1))"
mvn -B -ntp verify "$@"

build=java/hspmn/target/native-build
ctest --test-dir "$build" --output-on-failure

# the README's first commands on a machine whose default java is older than 22: bin/hspmn, and a quiet
# ci/demo.sh; then HSPMN_CUDA=AUTO without cublasLt.h / Triton configures CPU-only (needs nvcc, else skipped)
bash ci/check-newcomer.sh
bash ci/check-cuda-auto.sh
# a service on the library jar and Gson alone: loads a checkpoint and generates (nothing of hspmn-app)
bash ci/check-library-alone.sh

# `hspmn serve` as a process of its own under 4 concurrent streams (ci/gpu-serve.sh runs 32 on CUDA)
HSPMN_CP="java/hspmn-app/target/hspmn-app-0.1.0-SNAPSHOT.jar:java/hspmn-app/target/lib/*" \
  bash ci/serve-load.sh java/hspmn-app/target/serve-load/serve-load.json \
  --random --backend cpu --threads 2 --max-batch 4 -- --streams 4 --requests 3 --new-tokens 32

.venv/bin/python native/reference/check_native.py --lib "$build/libhspmn.so"
# the language model (loss, every gradient, AdamW, logits) and cached decoding against the float64 reference
.venv/bin/python native/reference/check_model.py --backend cpu --lib "$build/libhspmn.so"
# residual dropout of one block (forward, backward, p = 0, evaluation) against the float64 reference
.venv/bin/python native/reference/check_dropout.py --backend cpu --lib "$build/libhspmn.so"
.venv/bin/python native/reference/check_decode.py --backend cpu --lib "$build/libhspmn.so"
# the same through hspmn_decoder_step (sampling on the backend) and its bad inputs
.venv/bin/python native/reference/check_decode.py --backend cpu --path step --lib "$build/libhspmn.so"
# the chunked inference forward (forced small chunks) against the one-pass forward, bitwise on the CPU
.venv/bin/python native/reference/check_chunked.py --backend cpu --lib "$build/libhspmn.so"
.venv/bin/python native/reference/test_dlpack.py --lib "$build/libhspmn.so"
# configurations too large for memory are refused before allocating (ci/gpu.sh runs it on the device)
.venv/bin/python native/reference/check_memory.py --backend cpu --lib "$build/libhspmn.so"
# sampling: the CPU op against the definition bit for bit (and chi-square), and the CUDA kernel's
# algorithm replayed in Python against the same definition
.venv/bin/python native/reference/check_sample.py --backend cpu --lib "$build/libhspmn.so"
.venv/bin/python native/reference/emulate_sample_kernel.py
# the GPU time breakdown's trace parsing and categories, on a fabricated trace
.venv/bin/python native/bench/test_kernel_breakdown.py

# the Triton attention kernels in Triton's CPU interpreter (float32) against the float64 reference
TRITON_INTERPRET=1 .venv/bin/python native/kernels/triton/test_sqdk_interpret.py
# swiglu_gemm (gate/up GEMM with SwiGLU in the epilogue) the same way, odd sizes and tails (~10 s)
TRITON_INTERPRET=1 .venv/bin/python native/kernels/triton/test_swiglu_gemm_interpret.py
