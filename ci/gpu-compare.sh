#!/usr/bin/env bash
# Issue 12's before/after in one device call: the block (hspmn_block.py), its per-kernel breakdown
# (kernel_breakdown.py, inference and training) and the 1B language model's training step
# (hspmn_lm_bench), for this tree and for a base tree, beside the dense block (dense_block.py), all
# on the same GPU. Nothing else shares the GPU while a measurement runs (they run one after another).
#
#   git archive <base> native | gzip > .carry/base-native.tgz      (on the development machine)
#   bash ci/gpu-compare.sh [.carry/base-native.tgz]                 (on the GPU machine)
# HSPMN_COMPARE_BUILD_ONLY=1 stops after the builds (run it in the background while the call does
# other work, then run the script again to measure: the second run waits for a build still running,
# through a lock, and finds the builds done).
#
# HSPMN_NEW_BUILD=DIR uses this tree's build in DIR instead of building it again.
# Each tree is built with its own scripts (the base's Python bindings match the base library's ABI).
# HSPMN_COMPARE="dense block breakdown lm" picks parts (add "nosearch": this tree's block again with
# HSPMN_GEMM_SEARCH=0, after the two trees' blocks); HSPMN_LM_RUNS="B:S:recompute ..." the LM
# shapes of the new tree (default "8:2048:0"; the base runs the first one without recompute).
# Results: {new,base}-*.json in $OUT/compare.tgz (or build-compare/compare/ without OUT).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
base_tgz="${1:-.carry/base-native.tgz}"
py="${HSPMN_PYTHON:-python3}"
parts=" ${HSPMN_COMPARE:-dense block breakdown lm} "
lm_runs="${HSPMN_LM_RUNS:-8:2048:0}"
out="${OUT:-build-compare}/compare"
work=build-compare
mkdir -p "$out" "$work"

build() {  # build DIR SRC: the CUDA library and tools of the tree at SRC
  cmake -S "$2/native" -B "$1" -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON -DHSPMN_CUDA_ARCHS=90 \
    "-DHSPMN_PYTHON=$py" > "$1.configure.log" 2>&1 &&
    cmake --build "$1" -j "$(nproc)" --target hspmn hspmn_lm_bench > "$1.build.log" 2>&1
}

t0=$SECONDS
# One run builds at a time: a measuring run started while a HSPMN_COMPARE_BUILD_ONLY=1 run is still
# building waits here for it (then finds the builds done) instead of building the same trees beside it.
exec 9>"$work/.build.lock"
flock 9
# HSPMN_NEW_BUILD=build-gpu: this tree's library is already built there (by ci/gpu.sh in the same call)
new_build="${HSPMN_NEW_BUILD:-$work/new}"
if [[ -n "${HSPMN_NEW_BUILD:-}" ]]; then true & new_pid=$!; else build "$work/new" . & new_pid=$!; fi
have_base=0
if [[ -f "$base_tgz" ]]; then
  # extracted once: a second run in the same call (HSPMN_COMPARE_BUILD_ONLY=1 first) reuses the build
  [[ -d "$work/base-src/native" ]] || { mkdir -p "$work/base-src" && tar -xzf "$base_tgz" -C "$work/base-src"; }
  build "$work/base" "$work/base-src" & base_pid=$!
  wait "$base_pid" && have_base=1 || { echo "base build failed:"; tail -20 "$work/base.build.log"; }
fi
wait "$new_pid" || { echo "new build failed:"; tail -30 "$work/new.build.log"; exit 1; }
echo "builds: $((SECONDS - t0)) s (base: $have_base)"
flock -u 9
# HSPMN_COMPARE_BUILD_ONLY=1: build now (beside other work of the call), measure in a second run
[[ "${HSPMN_COMPARE_BUILD_ONLY:-0}" == 1 ]] && exit 0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

trees=(new)
[[ $have_base == 1 ]] && trees+=(base)
src_of() { [[ $1 == new ]] && echo . || echo "$work/base-src"; }

lib_of() { [[ $1 == new ]] && echo "$new_build" || echo "$work/base"; }
# part by part, both trees each (a call cut short still has a before/after of the parts it reached)
if [[ $parts == *" block "* ]]; then
  for t in "${trees[@]}"; do
    echo "== $t: hspmn_block.py"
    "$py" "$(src_of "$t")/native/bench/hspmn_block.py" --mode all --iters 10 --lib "$(lib_of "$t")/libhspmn.so" \
      --json "$out/$t-block.json" 2>&1 | tail -8
  done
fi
if [[ $parts == *" nosearch "* ]]; then
  # this tree's block with cuBLASLt's first heuristic answers (HSPMN_GEMM_SEARCH=0): the search's effect
  echo "== new, HSPMN_GEMM_SEARCH=0: hspmn_block.py"
  HSPMN_GEMM_SEARCH=0 "$py" native/bench/hspmn_block.py --mode all --iters 10 --lib "$new_build/libhspmn.so" \
    --json "$out/new-nosearch-block.json" 2>&1 | tail -8
fi
if [[ $parts == *" dense "* ]]; then
  echo "== dense_block.py"
  "$py" native/bench/dense_block.py --mode all --iters 10 --json "$out/dense.json" 2>&1 | tail -8
fi
if [[ $parts == *" breakdown "* ]]; then
  for t in "${trees[@]}"; do
    for mode in infer train; do
      echo "== $t: kernel_breakdown.py ($mode)"
      "$py" "$(src_of "$t")/native/bench/kernel_breakdown.py" --lib "$(lib_of "$t")/libhspmn.so" \
        $([[ $mode == train ]] && echo --train) --json "$out/$t-breakdown-$mode.json" 2>&1 | grep '^breakdown summary:'
    done
  done
fi
if [[ $parts == *" lm "* ]]; then
  for t in "${trees[@]}"; do
    runs=$lm_runs
    [[ $t == base ]] && runs="${lm_runs%% *}"
    for r in $runs; do
      IFS=: read -r b s rc <<< "$r"
      [[ $t == base ]] && rc=0
      args=(--backend cuda --batch "$b" --seq "$s" --steps 6 --warmup 2 --json "$out/$t-lm-$b-$s-$rc.json")
      [[ $rc == 1 ]] && args+=(--recompute 1)
      echo "== $t: hspmn_lm_bench B=$b S=$s recompute $rc"
      timeout 240 "$(lib_of "$t")/tools/hspmn_lm_bench" "${args[@]}" 2>&1 | tail -2
    done
  done
fi
echo "compare: $((SECONDS - t0)) s; JSON in $out"
# The device machine returns only a few files: under OUT the JSON travel as one archive.
if [[ -n "${OUT:-}" ]]; then
  tar -czf "$OUT/compare.tgz" -C "$OUT" compare && rm -rf "$out" && echo "packed: $OUT/compare.tgz"
fi
