#!/usr/bin/env bash
# The CUDA backend on a GPU machine (the H200 device machine: nvcc, cuBLAS, python3 with torch and
# triton 3.6.0, cmake; no Java unless .carry/ brings a JRE). Run from the repository root:
#   bash ci/gpu.sh                 HSPMN_CUDA_ARCHS=90 by default; GPU_JOBS=<n> build jobs
# Stages: configure, build, test_native, test_model, test_memory and memory_cuda (too-large configurations
# refused before allocating, host and device), hspmn_cuda (gemm + attention vs float64), gemm_search
# (cuBLASLt algorithm search: checks and the block's GEMMs, heuristic's first vs searched), graph_cuda
# (CUDA graphs through the ABI),
# hspmn_cuda_lm (the language model's CUDA ops vs float64), golden parity through the CUDA backend, the
# same goldens through the CPU backend of the CUDA-built library, the language model through the CUDA
# backend against hspmn_lm.py (model_cuda), residual dropout against the reference and the CPU
# backend (dropout_cuda), cached decoding against the full forward (decode_cuda),
# sampling against the CPU op bit for bit, with its kernel timings (sample_cuda), the fused gate/up
# GEMM with SwiGLU in its epilogue (the Triton kernel JIT; both kernels in the build: swiglu_gemm,
# swiglu_gemm_cuda; its backward launch: swiglu_backward_gemm_cuda), the block with that kernel against the
# unfused path bit for bit, forward and backward (swiglu_block), the down
# GEMM with the residual in its epilogue alone and in the block (down_residual_cuda, down_residual_block), the
# pair-norm dx kernel that reads each row once against the two-read one (rms_norm_resident), the chunked
# inference forward against the one-pass forward (chunked_cuda), two streams against one (streams_cuda), chunked forwards and training with NaN-filled scratch arenas (poisoned_cuda), and the Java tests when
# ci/pack-carry.sh has filled .carry/ (with the HTTP service under 32 streams: serve_cuda), then the
# benchmarks (decoding: bench_decode; a 1M-token prompt then decoding: decode_long) and the per-kernel
# time breakdown (HSPMN_GPU_BENCH=0 skips them; the
# breakdown's JSON goes to $OUT/breakdown-{infer,train}.json). A failed stage does not stop the
# later ones (they report their own failure); the exit status is non-zero if any stage failed.
# Logs go to build-gpu/logs (one per stage); when OUT is set they are also packed into
# $OUT/gpu-logs.tgz beside $OUT/gpu-summary.txt (with the breakdown's two JSON files, four: the device
# machine returns only a few).
# HSPMN_GPU_STAGES="name ..." runs only the named stages (plus configure and build).
# The summary table is printed last.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build=build-gpu
py="${HSPMN_PYTHON:-python3}"
archs="${HSPMN_CUDA_ARCHS:-90}"
jobs="${GPU_JOBS:-$(nproc)}"
logs="$build/logs"
mkdir -p "$logs"

names=()
results=()
times=()

# stage NAME CMD...: runs CMD with its output in $logs/NAME.log (and on the console), records the result.
stage() {
  local name="$1"
  shift
  # HSPMN_GPU_STAGES="a b c": only these stages (configure and build always run)
  if [[ -n "${HSPMN_GPU_STAGES:-}" && "$name" != configure && "$name" != build && \
        " ${HSPMN_GPU_STAGES} " != *" $name "* ]]; then
    return 0
  fi
  echo "=== $name: $*"
  local t0=$SECONDS rc
  "$@" 2>&1 | tee "$logs/$name.log"
  rc=${PIPESTATUS[0]}
  names+=("$name")
  times+=("$((SECONDS - t0))")
  if [[ $rc -eq 0 ]]; then results+=("ok"); else results+=("FAIL (rc $rc)"); fi
  echo "=== $name: rc $rc"
  return 0
}

skip() {
  names+=("$1")
  times+=("0")
  results+=("skipped: $2")
  echo "=== $1: skipped: $2"
}

{
  echo "date: $(date -u)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  nvcc --version 2>&1 | tail -2
  cmake --version 2>&1 | head -1
  "$py" -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__)' 2>&1
  git log --oneline -1 2>/dev/null || true
} | tee "$logs/environment.log"

stage configure cmake -S native -B "$build" -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON "-DHSPMN_CUDA_ARCHS=$archs" \
  "-DHSPMN_PYTHON=$py"
stage build cmake --build "$build" -j "$jobs"
stage ldd_nm bash -c "ldd $build/libhspmn.so; ! ldd $build/libhspmn.so | grep -E 'libcuda|libcudart|libcublas' && \
  ! nm -D --defined-only $build/libhspmn.so | grep -v ' hspmn_' | grep -v '^$'"
# HSPMN_GPU_TESTS=0 skips the checks (to run the benchmarks alone in a second call on a warm machine)
if [[ "${HSPMN_GPU_TESTS:-1}" == 1 ]]; then
  stage test_native "$build/tests/test_native"
  stage test_model "$build/tests/test_model"
  # configurations too large for memory are refused before allocating: host (test_memory, under an
  # address-space limit) and the device (check_memory.py: model, decoder, training forward and tensor
  # larger than the card give HSPMN_ERR_OUT_OF_MEMORY with the bytes needed and cudaMemGetInfo's free)
  stage test_memory "$build/tests/test_memory"
  stage memory_cuda "$py" native/reference/check_memory.py --backend cuda --lib "$build/libhspmn.so"
  # device faults (issue 11): with the device filled by torch, block forward/backward, block/model/decoder
  # creation and decoder append fail with HSPMN_ERR_OUT_OF_MEMORY and work again on the same context once
  # freed (equal to a fresh context); after torch faults the CUDA context (out-of-bounds index), every call
  # fails with HSPMN_ERR_DEVICE_LOST naming the error and the process lives. Last line: "check_gpu_faults: ..."
  stage gpu_faults "$py" native/reference/check_gpu_faults.py --lib "$build/libhspmn.so"
  stage test_sample "$build/tests/test_sample"
  stage hspmn_cuda "$build/tests/hspmn_cuda"
  # gemm's cuBLASLt algorithm search: searched GEMMs vs float64, contexts and processes (HSPMN_GEMM_CACHE)
  # bitwise equal, then the block's GEMMs with the heuristic's first vs the searched algorithm (TFLOP/s,
  # "total" lines). Last line: "gemm_search: ok"
  stage gemm_search bash ci/gpu-gemm-search.sh "$build"
  stage hspmn_cuda_lm "$build/tests/hspmn_cuda_lm"
  # the per-op backend suite (native/tests/backend_ops): every registered op case (odd tails, head dims
  # 8..128) on the CUDA ops against the CPU ops by normalised MSE (tolerances.json), then the same CPU ops
  # against the float64 reference. Last lines: "N checks, 0 failures" and "... 0 failures".
  stage backend_ops bash -c "'$build/tests/test_backend_ops' --require cuda && \
    '$py' native/reference/check_backend_ops.py --bin '$build/tests/test_backend_ops'"
  stage graph_cuda "$build/tests/graph_cuda"
  # data parallelism (issue 14, native/README.md "Data parallelism"): the CPU checks of ctest on CUDA contexts
  # (2, 3, 4 LOCAL ranks on this one GPU vs one rank with the whole batch, ZeRO-1 bitwise unsharded, resume
  # on another rank count, timeout/abort), then NCCL of size 1 bitwise the run without a communicator
  # (unsharded and ZeRO-1), NCCL create of world 2 without rank 1 failing after its 3 s timeout, abort, and the
  # timing line "data_parallel bench ..." (backward ms without/with comm, all-reduce ms, overlapped ms).
  # NCCL not loadable is a failure ("FAILED: NCCL cannot be loaded: ..."); HSPMN_NCCL names the wheel's
  # library that torch installed. Last line: "N checks, 0 failures".
  nccl_lib="${HSPMN_NCCL:-$("$py" -c 'import nvidia.nccl as n, os; print(os.path.join(list(n.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null || true)}"
  echo "data_parallel_cuda: HSPMN_NCCL=${nccl_lib:-(not found by python; the library searches itself)}"
  stage data_parallel_cuda timeout 900 env HSPMN_NCCL="$nccl_lib" "$build/tests/test_data_parallel" --backend cuda --nccl
  stage goldens_cuda "$py" native/reference/check_native.py --backend cuda --lib "$build/libhspmn.so"
  stage goldens_cpu "$py" native/reference/check_native.py --backend cpu --lib "$build/libhspmn.so"
  # the language model (embedding, blocks, final norm, fused cross-entropy, AdamW) vs float64 hspmn_lm.py
  stage model_cuda "$py" native/reference/check_model.py --backend cuda --lib "$build/libhspmn.so"
  # residual dropout: one block with p > 0 and p = 0 vs float64 hspmn_ref.py and vs the CPU backend
  # (the same Philox masks), forward and backward, bitwise repeat, evaluation ignores dropout
  stage dropout_cuda "$py" native/reference/check_dropout.py --backend cuda --lib "$build/libhspmn.so"
  # cached decoding (hspmn_decoder_*) through the CUDA backend against the full forward of the same library
  stage decode_cuda "$py" native/reference/check_decode.py --backend cuda --lib "$build/libhspmn.so"
  # the decode step (skinny GEMMs, fused per-row kernels, sampling on the device), eager and as graphs
  stage decode_step_cuda "$py" native/reference/check_decode.py --backend cuda --path step --lib "$build/libhspmn.so"
  stage decode_graph_cuda "$py" native/reference/check_decode.py --backend cuda --path graph --lib "$build/libhspmn.so"
  stage decode_graph_il_cuda env HSPMN_SKINNY_INTERLEAVE=1 "$py" native/reference/check_decode.py --backend cuda \
    --path graph --lib "$build/libhspmn.so"
  # skinny_gemm's every epilogue vs float64, then its weight-streaming rate beside cuBLASLt
  stage skinny_gemm "$build/tests/skinny_gemm_cuda" --bench ${HSPMN_SKINNY_SWEEP:+--sweep}
  # sample_tokens: the CUDA op bit for bit against the CPU op and the reference, bad-row status, chi-square,
  # then the kernel's us per launch for n = 1, 32 at V = 256 and 65536
  stage sample_cuda "$py" native/reference/check_sample.py --backend cuda --lib "$build/libhspmn.so"
  # DLPack both ways (torch CUDA tensors <-> DEVICE tensors, zero copy, deleter once, bad inputs) and contexts
  # on torch streams: stream order without syncs, the legacy default stream, no wait for a busy other stream
  # the chunked inference forward (forced small chunks; HOST staging; a captured chunked graph) against
  # the one-pass forward of the same library, then the golden cases' inference forwards in chunks of 13 rows
  stage chunked_cuda bash -c "'$py' native/reference/check_chunked.py --backend cuda --lib '$build/libhspmn.so' && \
    HSPMN_FORWARD_CHUNK_ROWS=13 '$py' native/reference/check_native.py --backend cuda --lib '$build/libhspmn.so'"
  # the same chunked forwards, and training (whose backward scratch is the training arena), with every
  # arena filled with NaN bytes when handed out (HSPMN_POISON_SCRATCH=1): a kernel reading scratch the
  # call did not write turns the output NaN and fails the bound
  stage poisoned_cuda bash -c "export HSPMN_POISON_SCRATCH=1; \
    '$py' native/reference/check_chunked.py --backend cuda --lib '$build/libhspmn.so' && \
    '$py' native/reference/check_model.py --backend cuda --lib '$build/libhspmn.so' && \
    '$py' native/reference/check_dropout.py --backend cuda --lib '$build/libhspmn.so'"
  # HSPMN_STREAMS=2 (the reflexive stream's kernels on a second stream) against one stream, bit for bit:
  # forward (one pass, chunked, HOST tensors), training forward and backward, a captured graph; bad values
  stage streams_cuda "$py" native/reference/check_streams.py --lib "$build/libhspmn.so"
  stage dlpack_cuda "$py" native/reference/test_dlpack.py --backend cuda --lib "$build/libhspmn.so"
  # every op and the whole block, CUDA against the CPU backend of the same library (head dims 64/128, S=20000)
  stage cuda_vs_cpu "$py" native/reference/check_cuda_block.py --lib "$build/libhspmn.so"
  # the Triton attention kernels, JIT and the build's AOT cubins (launched as libhspmn's loader does),
  # against the reference in bf16 (native/kernels/triton/gpu_check.py; no timings)
  stage triton_cuda "$py" native/kernels/triton/gpu_check.py --no-bench --cubins "$build/triton/sm${archs%%[;,]*}"
  # swiglu_gemm (issue 12.1: SwiGLU in the gate/up GEMM's epilogue, Triton JIT): bf16 parity of every
  # config, then fused vs cuBLAS x2 + SwiGLU pass at N 262144..4096, (D, F) (2048, 8192), (2048, 5632);
  # prints a table and "swiglu_gemm: fused wins at ..." / "cuBLAS wins at ..." (needs no build: it can
  # also run alone, python3 native/kernels/triton/swiglu_gemm_gpu.py; the timeout guards against an
  # untimed warp-specialised config hanging)
  stage swiglu_gemm timeout 300 "$py" native/kernels/triton/swiglu_gemm_gpu.py
  # the build's two swiglu_gemm kernels (src/cuda/swiglu_gemm.cpp: the hand-written sm_90a one, CTA pairs
  # and single CTAs, and the Triton one AOT-compiled) against cuBLASLt + swiglu_forward: gate/up within an
  # ulp, act bitwise, gate|up rows of 2F, no write past the outputs, refused shapes; timings
  stage swiglu_gemm_cuda timeout 300 "$build/tests/swiglu_gemm_cuda" --bench
  # the same kernel's backward launch (swiglu_backward_gemm: d_gate | d_up from the d_act GEMM's epilogue)
  # against cuBLASLt + swiglu_backward: within two ulps (the share that differs printed), alpha, row
  # strides past F untouched, refused shapes; timings
  stage swiglu_backward_gemm_cuda timeout 300 "$build/tests/swiglu_backward_gemm_cuda" --bench
  # the block with the sm_90a kernel (the default) against HSPMN_SWIGLU_GEMM=0, bit for bit: forward (one
  # pass, chunked, HOST), training forward and backward with and without dropout, a graph; bad values;
  # the same for its backward launch (HSPMN_SWIGLU_BACKWARD_GEMM=1 against 0)
  stage swiglu_block "$py" native/reference/check_swiglu_gemm.py --lib "$build/libhspmn.so"
  # the down GEMM with the residual in its epilogue (src/cuda/down_residual.cpp, sm_90a) against cuBLASLt
  # + residual_out: out within an ulp (the share that differs printed), res_sel, in place, refused shapes;
  # timings; then the block with it (HSPMN_DOWN_RESIDUAL=1; off by default) against without, bit for bit
  stage down_residual_cuda timeout 300 "$build/tests/down_residual_cuda" --bench
  stage down_residual_block "$py" native/reference/check_down_residual.py --lib "$build/libhspmn.so"
  # the block backward's pair-norm dx from the kernel that reads each row once (HSPMN_RMS_NORM_RESIDENT=1,
  # the default) against the two-read kernel (=0), bit for bit; bad values
  stage rms_norm_resident "$py" native/reference/check_rms_norm_resident.py --lib "$build/libhspmn.so"

  if [[ -f .carry/jre.tgz && -f .carry/java.tgz ]]; then
    # the whole JUnit suite against the CUDA-built library, gpu-tagged tests included and required;
    # GpuDataParallelTest needs NCCL (hspmn train --gpus 1 --comm nccl bitwise the plain run; prints
    # "gpu data parallel: ..." lines)
    stage java env HSPMN_NCCL="$nccl_lib" ci/gpu-java.sh "$build/libhspmn.so"
  else
    skip java "no .carry/jre.tgz and .carry/java.tgz (run ci/pack-carry.sh on the development machine)"
  fi
  if [[ -f .carry/jre.tgz && -f .carry/java.tgz ]]; then
    # `hspmn serve` on CUDA, 1B shape, 32 concurrent streaming clients: tok/s, p50/p99 time between tokens, errors 0
    stage serve_cuda ci/gpu-serve.sh "$build/libhspmn.so" "$logs/serve-load.json"
  else
    skip serve_cuda "no .carry/ (run ci/pack-carry.sh on the development machine)"
  fi
fi

if [[ "${HSPMN_GPU_BENCH:-1}" == 1 ]]; then
  # the dense Llama-style baseline, measured in the same call as HSPMN (BENCHMARKS.md)
  stage bench_dense "$py" native/bench/dense_block.py --mode all --iters 10 --json "$logs/dense.json"
  stage bench_hspmn "$py" native/bench/hspmn_block.py --mode all --iters 10 --lib "$build/libhspmn.so" --json "$logs/hspmn.json"
  # the native bench command (C ABI only), the same modes plus stress (B=1, S doubling from 65,536 with the
  # chunked forward: prints the peak at S=1,048,576 and the largest S that ran)
  stage bench_native "$build/tools/hspmn_bench" --backend cuda --mode all --iters 10 --json "$logs/hspmn-native.json"
  # the paper's 1B language-model shape (24 layers, D=2048, H=16, Hkv=4): training steps, MFU, peak memory
  if [[ -f .carry/jre.tgz && -f .carry/java.tgz ]]; then
    # the same shape trained from Java (hspmn train) on data/corpus.txt
    stage train_1b_java ci/gpu-train.sh "$build/libhspmn.so"
  fi
  stage lm_train "$build/tools/hspmn_lm_bench" --backend cuda --batch "${HSPMN_LM_BATCH:-8}" --seq "${HSPMN_LM_SEQ:-2048}" \
    --steps 8 --warmup 2 --json "$logs/lm-train.json"
  # where the GPU time goes: kernel time per kernel and category (torch.profiler/CUPTI), B=64 S=4096,
  # inference and training; the JSON goes to $OUT (returned by the device machine) or the logs
  bd="${OUT:-$logs}"
  stage breakdown bash -c "'$py' native/bench/kernel_breakdown.py --lib '$build/libhspmn.so' --json '$bd/breakdown-infer.json' \
    && '$py' native/bench/kernel_breakdown.py --lib '$build/libhspmn.so' --train --json '$bd/breakdown-train.json'"
  # cached decoding, 1B shape: per-token latency (1 layer and 24; cache 4k, 32k; B=1), TTFT of a
  # 32k prompt, 32 slots batched; router pinned all / none routed (decode_bench.cpp says why)
  stage bench_decode "$build/tools/hspmn_decode_bench" --backend cuda --json "$logs/decode.json"
  # with HSPMN_SKINNY_SWEEP set: the same with skinny_gemm's interleaved k tiles (HSPMN_SKINNY_INTERLEAVE=1)
  if [[ -n "${HSPMN_SKINNY_SWEEP:-}" ]]; then
    stage bench_decode_il env HSPMN_SKINNY_INTERLEAVE=1 "$build/tools/hspmn_decode_bench" --backend cuda \
      --paths append,graph --routing none,calibrated --json "$logs/decode-il.json"
  fi
  # the same 1B model, one sequence: a 1,048,576-token prompt prefilled in chunks of 8192, then 64 decoded
  # tokens (prefill none routed, decode all routed: decode_bench.cpp run_long_prompt says why); K/V caches
  # 48 GiB, most of an 80 GB card in all (BENCHMARKS.md has the peak): peak library memory, TTFT and ms/token
  stage decode_long "$build/tools/hspmn_decode_bench" --backend cuda --long-prompt 1048576 --long-decode 64 \
    --json "$logs/decode-long.json"
  # what CUDA graphs save: ordinary forward vs replay, launch-bound (decode-sized) and at full size
  stage bench_graph bash -c "$build/tools/hspmn_bench --backend cuda --graph --batch 1 --seq 128 --iters 50 \
    --json $logs/hspmn-graph-small.json && $build/tools/hspmn_bench --backend cuda --graph --batch 8 --seq 4096 \
    --iters 20 --json $logs/hspmn-graph.json"
fi

failed=0
{
  echo
  printf '%-14s %-8s %s\n' stage seconds result
  for i in "${!names[@]}"; do
    printf '%-14s %-8s %s\n' "${names[$i]}" "${times[$i]}" "${results[$i]}"
    [[ "${results[$i]}" == FAIL* ]] && failed=1
  done
  # one line per breakdown run (kernel_breakdown.py's last line): GPU ms, GEMM share and TFLOP/s, attention share
  if [[ " ${names[*]} " == *" breakdown "* ]]; then grep '^breakdown summary:' "$logs/breakdown.log" || true; fi
  if [[ " ${names[*]} " == *" serve_cuda "* ]]; then grep '^serve load:' "$logs/serve_cuda.log" || true; fi
  echo "logs: $logs${OUT:+ (packed in $OUT/gpu-logs.tgz)}"
} | tee "$logs/summary.txt"
if [[ -n "${OUT:-}" ]]; then
  cp "$logs/summary.txt" "$OUT/gpu-summary.txt"
  tar -czf "$OUT/gpu-logs.tgz" -C "$build" logs
fi
for r in "${results[@]}"; do [[ "$r" == FAIL* ]] && failed=1; done
exit "$failed"
