#!/usr/bin/env bash
# Twelfth session, call A: targeted build; parity checks of the two unrun CUDA changes (fused backward d_x,
# route_select wide way) first; attention_gap.py during the build; then issue 12's table (this tree, base
# main dee7ad1, dense) and breakdowns if time is left.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"; L="$OUT/l"; mkdir -p "$L"
T0=$SECONDS; BUDGET="${BUDGET:-560}"
left() { echo $((BUDGET - (SECONDS - T0))); }
mark() { echo "[$((SECONDS - T0)) s] $*"; }
pack() { tar -czf "$OUT/logs.tgz" -C "$OUT" l && rm -rf "$L"; }
trap pack EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee "$L/env.txt"
git log --oneline -1 | cut -c1-60 | tee -a "$L/env.txt"
py=python3; b=build-gpu
HSPMN_NEW_BUILD=$b HSPMN_COMPARE_BUILD_ONLY=1 bash ci/gpu-compare.sh .carry/base-native.tgz > "$L/base-build.log" 2>&1 &
BASE=$!
timeout 110 $py native/bench/attention_gap.py --cubins .carry/cubins > "$L/attn_gap.log" 2>&1 &
GAP=$!
mark build
cmake -S native -B $b -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON -DHSPMN_CUDA_ARCHS=90 "-DHSPMN_PYTHON=$py" > "$L/configure.log" 2>&1
cmake --build $b -j 16 --target hspmn test_backend_ops test_memory hspmn_lm_bench > "$L/build.log" 2>&1 || { mark "build failed"; tail -30 "$L/build.log"; exit 1; }
mark "built"
wait $GAP; mark "attn_gap rc $?"; cat "$L/attn_gap.log" | cut -c1-160 | head -30
chk() { local name=$1; shift; local t=$SECONDS; timeout 150 "$@" > "$L/$name.log" 2>&1; local rc=$?
  printf '%-14s rc %s  %3d s  %s\n' "$name" "$rc" $((SECONDS - t)) "$(tail -1 "$L/$name.log" | cut -c1-110)" | tee -a "$L/checks.txt"; }
chk backend_ops bash -c "$b/tests/test_backend_ops --require cuda && $py native/reference/check_backend_ops.py --bin $b/tests/test_backend_ops"
grep -h "route_select B=\|differs\|FAIL" "$L/backend_ops.log" | cut -c1-150 | head -16
chk model_cuda $py native/reference/check_model.py --backend cuda --lib $b/libhspmn.so
chk cuda_vs_cpu $py native/reference/check_cuda_block.py --lib $b/libhspmn.so
chk goldens_cuda $py native/reference/check_native.py --backend cuda --lib $b/libhspmn.so
chk dropout_cuda $py native/reference/check_dropout.py --backend cuda --lib $b/libhspmn.so
chk decode_cuda $py native/reference/check_decode.py --backend cuda --lib $b/libhspmn.so
chk decode_step $py native/reference/check_decode.py --backend cuda --path graph --lib $b/libhspmn.so
chk chunked_cuda $py native/reference/check_chunked.py --backend cuda --lib $b/libhspmn.so
chk streams_cuda $py native/reference/check_streams.py --lib $b/libhspmn.so
grep -h "differing\|FAIL" "$L/streams_cuda.log" | grep -v " 0 " | head -5
chk test_memory $b/tests/test_memory
grep -h "cuda top-k\|cuda threshold\|backward" "$L/test_memory.log" | head -6
wait $BASE; mark "base build rc $?"; tail -2 "$L/base-build.log"
if (( $(left) > 120 )); then
  mark compare
  HSPMN_NEW_BUILD=$b HSPMN_COMPARE="block dense" timeout $(( $(left) - 60 )) bash ci/gpu-compare.sh .carry/base-native.tgz > "$L/compare.log" 2>&1
  mark "compare rc $?"; grep -E "tok/s|^== |ratio" "$L/compare.log" | cut -c1-160
  [[ -f "$OUT/compare.tgz" ]] && mv "$OUT/compare.tgz" "$L/"
fi
for st in 2 1 2; do
  (( $(left) > 75 )) || break
  mark "block HSPMN_STREAMS=$st"
  HSPMN_STREAMS=$st timeout 60 $py native/bench/hspmn_block.py --mode all --iters 10 --lib $b/libhspmn.so --json "$L/block-streams$st-$SECONDS.json" 2>&1 | grep "tok/s"
done
if (( $(left) > 45 )); then
  timeout $(( $(left) - 5 )) $py native/bench/kernel_breakdown.py --lib $b/libhspmn.so --train --json "$L/breakdown-train.json" > "$L/bd-train.log" 2>&1
  grep -E "rms_norm|router|convert|breakdown summary" "$L/bd-train.log" | cut -c1-140 | head -12
fi
if (( $(left) > 25 )); then
  timeout $(( $(left) - 3 )) $py native/bench/kernel_breakdown.py --lib $b/libhspmn.so --batch 1 --seq 131072 --iters 10 > "$L/bd131.log" 2>&1
  grep -E "route_select|router_forward|sqdk_attention_fwd|breakdown summary" "$L/bd131.log" | cut -c1-140 | head -12
fi
for st in 1 2; do
  (( $(left) > 70 )) || break
  mark "lm_bench HSPMN_STREAMS=$st"
  HSPMN_STREAMS=$st timeout $(( $(left) - 10 )) $b/tools/hspmn_lm_bench --backend cuda --batch 8 --seq 2048 --steps 6 --warmup 2 --json "$L/lm-streams$st.json" 2>&1 | tail -2
done
mark done
