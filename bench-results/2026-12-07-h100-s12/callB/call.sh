#!/usr/bin/env bash
# Twelfth session, call B: the chunked forward's key bound (att_S = keys so far), HSPMN_POISON_SCRATCH checks,
# route_select's kAuto rule (4 sequences, 32,768), then HSPMN_STREAMS at smaller blocks.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"; L="$OUT/l"; mkdir -p "$L"
T0=$SECONDS; BUDGET="${BUDGET:-380}"
left() { echo $((BUDGET - (SECONDS - T0))); }
mark() { echo "[$((SECONDS - T0)) s] $*"; }
pack() { tar -czf "$OUT/logs.tgz" -C "$OUT" l && rm -rf "$L"; }
trap pack EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee "$L/env.txt"
py=python3; b=build-gpu
cmake -S native -B $b -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON -DHSPMN_CUDA_ARCHS=90 "-DHSPMN_PYTHON=$py" > "$L/configure.log" 2>&1
cmake --build $b -j 16 --target hspmn test_backend_ops > "$L/build.log" 2>&1 || { mark "build failed"; tail -30 "$L/build.log"; exit 1; }
mark "built"
chk() { local name=$1; shift; local t=$SECONDS; timeout 150 "$@" > "$L/$name.log" 2>&1; local rc=$?
  printf '%-16s rc %s  %3d s  %s\n' "$name" "$rc" $((SECONDS - t)) "$(tail -1 "$L/$name.log" | cut -c1-110)" | tee -a "$L/checks.txt"; }
chk chunked_cuda $py native/reference/check_chunked.py --backend cuda --lib $b/libhspmn.so
grep -h "FAIL" "$L/chunked_cuda.log" | head -5
export HSPMN_POISON_SCRATCH=1
chk p_chunked $py native/reference/check_chunked.py --backend cuda --lib $b/libhspmn.so
grep -h "FAIL" "$L/p_chunked.log" | head -5
chk p_model $py native/reference/check_model.py --backend cuda --lib $b/libhspmn.so
chk p_dropout $py native/reference/check_dropout.py --backend cuda --lib $b/libhspmn.so
chk p_cuda_vs_cpu $py native/reference/check_cuda_block.py --lib $b/libhspmn.so
chk p_decode $py native/reference/check_decode.py --backend cuda --lib $b/libhspmn.so
unset HSPMN_POISON_SCRATCH
chk backend_ops bash -c "$b/tests/test_backend_ops --require cuda"
grep -h "route_select B=\|FAIL" "$L/backend_ops.log" | cut -c1-150 | head -10
chk streams_cuda $py native/reference/check_streams.py --lib $b/libhspmn.so
chk goldens_cuda $py native/reference/check_native.py --backend cuda --lib $b/libhspmn.so
if (( $(left) > 60 )); then
  mark streams_small
  timeout $(( $(left) - 25 )) $py .carry/streams_small.py $b/libhspmn.so 2>&1 | tee "$L/streams_small.log" | grep -v Warn
fi
if (( $(left) > 20 )); then
  timeout $(( $(left) - 3 )) $py native/bench/kernel_breakdown.py --lib $b/libhspmn.so --batch 1 --seq 131072 --iters 10 > "$L/bd131.log" 2>&1
  grep -E "route_select|router_forward|breakdown summary" "$L/bd131.log" | cut -c1-140 | head -8
fi
mark done
