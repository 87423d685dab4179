#!/usr/bin/env bash
# Makes (or reuses) the repository's Python venv .venv with everything the build and the checks use:
# torch 2.13.0 (float64 reference, goldens), numpy, safetensors, triton 3.6.0 (AOT-compiles the CUDA
# attention kernels at build time) and nvidia-cublas (cublasLt.h for the CUDA build; the library
# itself is opened at run time). Offline: the wheels come from the local indexes. pip runs only when
# something is missing or at another version. Run from anywhere; source it or run it.
#   usage: ci/venv.sh            prints the python to use on its last line
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="$venv/bin/python"

if [ ! -x "$py" ]; then
  echo "venv: creating $venv"
  python3 -m venv "$venv" >/dev/null
fi

# Exit 0 only when every pinned package imports at its pinned version.
check='
import sys, importlib.metadata as md
want = {"torch": "2.13.0", "triton": "3.6.0"}
try:
    import numpy, safetensors, torch, triton
    md.version("nvidia-cublas")
except Exception as e:
    print(f"venv: missing: {e}"); sys.exit(1)
for name, v in want.items():
    have = md.version(name)
    if not have.startswith(v):
        print(f"venv: {name} {have}, want {v}"); sys.exit(1)
'
if "$py" -c "$check"; then
  echo "venv: reusing $venv (torch $("$py" -c 'import torch; print(torch.__version__)'), triton $("$py" -c 'import triton; print(triton.__version__)'))"
else
  echo "venv: installing torch 2.13.0, numpy, safetensors, triton 3.6.0, nvidia-cublas into $venv (offline index)"
  # pip's own output (warnings included) goes to a log, shown only when it fails
  log="$venv/pip-install.log"
  if ! "$py" -m pip install --quiet --no-color --disable-pip-version-check \
      --index-url file:///opt/pypi/simple --extra-index-url file:///opt/pypi-more/simple \
      torch==2.13.0 numpy safetensors triton==3.6.0 nvidia-cublas >"$log" 2>&1; then
    cat "$log" >&2
    echo "venv: pip install failed; its output is above and in $log" >&2
    exit 1
  fi
  "$py" -c "$check"
fi
echo "$py"
