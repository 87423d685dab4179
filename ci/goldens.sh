#!/usr/bin/env bash
# Golden cases: self-test the PyTorch reference, regenerate the goldens and check that the committed
# ones (java/hspmn/src/test/resources/goldens) still come out of it. Run from anywhere; works on a fresh clone.
#   ci/goldens.sh           check (exit 1 if the committed goldens drifted from the reference)
#   ci/goldens.sh --write   regenerate the committed goldens in place
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
goldens=java/hspmn/src/test/resources/goldens
ref=native/reference

write=0
case "${1:-}" in
  --write) write=1 ;;
  "") ;;
  *) echo "usage: ci/goldens.sh [--write]" >&2; exit 2 ;;
esac

# the reference's Python environment (torch 2.13.0 CPU and the rest, offline); its last line is the python
py="$(bash ci/venv.sh | tail -n 1)"

echo "goldens: self-test of the reference ($ref/test_ref.py)"
"$py" "$ref/test_ref.py"
echo "goldens: self-test of the language-model reference and its optimiser ($ref/test_lm.py)"
"$py" "$ref/test_lm.py"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "goldens: generating into $tmp"
"$py" "$ref/make_goldens.py" --out "$tmp"

if [ "$write" = 1 ]; then
  mkdir -p "$goldens"
  # replace the whole set so a case removed from make_goldens.py does not linger
  rm -f "$goldens"/*.safetensors
  cp "$tmp"/*.safetensors "$goldens"/
  echo "goldens: wrote $(ls "$goldens"/*.safetensors | wc -l) files to $goldens"
  # the Java parity test bounds ill-conditioned float32 results by PyTorch's own float32 error per case
  echo "goldens: recomputing PyTorch's float32 errors (java/hspmn/src/test/resources/f32-reference-errors.json)"
  "$py" java/hspmn/src/test/python/f32_reference_errors.py
else
  if [ ! -d "$goldens" ]; then
    echo "goldens: $goldens is missing; run ci/goldens.sh --write" >&2
    exit 1
  fi
  echo "goldens: comparing $goldens with the regenerated set"
  "$py" "$ref/compare_goldens.py" "$goldens" "$tmp"
fi
