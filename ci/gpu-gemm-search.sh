#!/usr/bin/env bash
# ci/gpu.sh stage gemm_search: gemm's cuBLASLt algorithm search (native/src/cuda/README.md "GEMM
# algorithms") on the GPU machine.
#   bash ci/gpu-gemm-search.sh BUILD_DIR
# 1. tests/gemm_search_cuda --bench with HSPMN_GEMM_SEARCH_LOG=1: the checks (float64 parity of searched
#    GEMMs, beta = 1 accumulation, contexts bitwise equal), one "hspmn gemm search:" line per searched
#    shape, then the block's GEMMs (and the pairs it ran before stacking [W_gate; W_up], [W_k; W_v]),
#    heuristic's first vs searched (TFLOP/s), and six "total" lines (the block now, then split).
# 2. Across processes: two runs with one HSPMN_GEMM_CACHE; the second must read every choice from the
#    file (it checks that itself) and print the same "gemm digest".
# 3. A cache file that is garbage, and one with a malformed line, are ignored: the run still passes.
# Exit status non-zero when any part fails.
set -uo pipefail
bin="$1/tests/gemm_search_cuda"
failed=0
HSPMN_GEMM_SEARCH_LOG=1 "$bin" --bench || failed=1

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
digest() {  # digest CACHE_FILE [--expect-cached]: runs, echoes the output, prints nothing else
  HSPMN_GEMM_SEARCH=all HSPMN_GEMM_SEARCH_LOG=1 HSPMN_GEMM_CACHE="$1" "$bin" --digest "${@:2}" 2>&1
}
out1=$(digest "$dir/gemm.cache") || failed=1
echo "$out1"
if grep -q '^skipped: no device' <<<"$out1"; then
  echo "gemm_search: skipped the cross-process part (no device)"
  exit "$failed"
fi
out2=$(digest "$dir/gemm.cache" --expect-cached) || failed=1
echo "$out2"
echo "--- $dir/gemm.cache:"
cat "$dir/gemm.cache" 2>/dev/null || echo "(no cache file written)"
d1=$(grep '^gemm digest' <<<"$out1")
d2=$(grep '^gemm digest' <<<"$out2")
if [[ -z "$d1" || "$d1" != "$d2" ]]; then
  echo "FAIL: two processes sharing HSPMN_GEMM_CACHE printed '$d1' and '$d2'"
  failed=1
else
  echo "cache across processes: same bits ($d1)"
fi

printf 'not a cache\n\x01\x02\n' >"$dir/garbage.cache"
{ head -1 "$dir/gemm.cache"; echo "NVIDIA 1 0 12 x"; tail -n +2 "$dir/gemm.cache" | cut -c1-40; } >"$dir/broken.cache"
for f in garbage broken; do
  out=$(digest "$dir/$f.cache") || failed=1
  grep -E '^(gemm counts|hspmn gemm cache|[0-9]+ checks|FAIL)' <<<"$out"
done
echo "gemm_search: $([[ $failed == 0 ]] && echo ok || echo FAILED)"
exit "$failed"
