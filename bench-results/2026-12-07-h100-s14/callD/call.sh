#!/usr/bin/env bash
# Fourteenth session, call D (B and C merged after refused starts): the committed tree (hand-off kernel,
# gu-free fused inference): parity checks; ncu on cuBLASLt's [gate|up] GEMM and the sm_90a kernel at
# N=16384; issue 12's table (this tree, base a23e42e = the session start, dense).
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
HSPMN_NEW_BUILD=$b HSPMN_COMPARE_BUILD_ONLY=1 bash ci/gpu-compare.sh .carry/base-s14.tgz > "$L/base-build.log" 2>&1 &
BASE=$!
cmake -S native -B $b -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON -DHSPMN_CUDA_ARCHS=90 "-DHSPMN_PYTHON=$py" > "$L/configure.log" 2>&1
cmake --build $b -j 16 --target hspmn swiglu_gemm_cuda test_memory > "$L/build.log" 2>&1 || { mark "build failed"; tail -30 "$L/build.log"; exit 1; }
mark "built"
chk() { local name=$1; shift; local t=$SECONDS; timeout 120 "$@" > "$L/$name.log" 2>&1; local rc=$?
  printf '%-14s rc %s  %3d s  %s\n' "$name" "$rc" $((SECONDS - t)) "$(tail -1 "$L/$name.log" | cut -c1-110)" | tee -a "$L/checks.txt"; }
chk swiglu_gemm $b/tests/swiglu_gemm_cuda
chk swiglu_block $py native/reference/check_swiglu_gemm.py --lib $b/libhspmn.so
chk chunked_cuda $py native/reference/check_chunked.py --backend cuda --lib $b/libhspmn.so
HSPMN_POISON_SCRATCH=1 chk p_chunked $py native/reference/check_chunked.py --backend cuda --lib $b/libhspmn.so
chk cuda_vs_cpu $py native/reference/check_cuda_block.py --lib $b/libhspmn.so
chk goldens_cuda $py native/reference/check_native.py --backend cuda --lib $b/libhspmn.so
chk model_cuda $py native/reference/check_model.py --backend cuda --lib $b/libhspmn.so
chk decode_cuda $py native/reference/check_decode.py --backend cuda --lib $b/libhspmn.so
chk test_memory $b/tests/test_memory
grep -h "FAIL" "$L"/*.log | head -8
mark "ncu"
timeout 100 ncu --clock-control none --set full --export "$L/prof" --force-overwrite $b/tests/swiglu_gemm_cuda --profile > "$L/ncu-run.log" 2>&1
mark "ncu rc $?"; tail -3 "$L/ncu-run.log"
( ncu --import "$L/prof.ncu-rep" --page details --csv > "$L/details.csv" 2>&1
  ncu --import "$L/prof.ncu-rep" --page source --print-source sass --csv > "$L/source.csv" 2>&1
  ncu --import "$L/prof.ncu-rep" --page details --print-units base > "$L/details.txt" 2>&1
  rm -f "$L/prof.ncu-rep"; gzip "$L/source.csv" )
mark "ncu exported"
wait $BASE; mark "base build rc $?"; tail -2 "$L/base-build.log"
if (( $(left) > 120 )); then
  mark compare
  HSPMN_NEW_BUILD=$b HSPMN_COMPARE="block dense" timeout $(( $(left) - 50 )) bash ci/gpu-compare.sh .carry/base-s14.tgz > "$L/compare.log" 2>&1
  mark "compare rc $?"; grep -E "tok/s|^== |ratio" "$L/compare.log" | cut -c1-160
  cp build-compare/compare/*.json "$L/" 2>/dev/null
fi
if (( $(left) > 40 )); then
  mark "block again (this tree)"
  timeout $(( $(left) - 5 )) $py native/bench/hspmn_block.py --mode all --iters 10 --lib $b/libhspmn.so --json "$L/block-again.json" 2>&1 | grep "tok/s"
fi
grep -E "^  [a-zA-Z_0-9]|Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|DRAM Throughput|Registers Per|Grid Size" "$L/details.txt" | cut -c1-150 | head -60
mark done
