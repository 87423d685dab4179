#!/usr/bin/env bash
# Thirteenth session, call B: the epilogue moved to the producer warpgroup's idle warps.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"; L="$OUT/l"; mkdir -p "$L"
T0=$SECONDS
mark() { echo "[$((SECONDS - T0)) s] $*"; }
pack() { tar -czf "$OUT/logs.tgz" -C "$OUT" l && rm -rf "$L"; }
trap pack EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee "$L/env.txt"
py=python3; b=build-gpu
cmake -S native -B $b -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON -DHSPMN_CUDA_ARCHS=90 "-DHSPMN_PYTHON=$py" > "$L/configure.log" 2>&1
cmake --build $b -j 16 --target swiglu_gemm_cuda > "$L/build.log" 2>&1 || { mark "build failed"; tail -30 "$L/build.log"; exit 1; }
mark "built"
cuobjdump -sass $b/CMakeFiles/hspmn_sm90a.dir/src/cuda/sm90a/swiglu_gemm_wgmma.cu.o > "$L/sass.txt" 2>&1
echo "HGMMA: $(grep -c HGMMA "$L/sass.txt")  UTMALDG: $(grep -c UTMALDG "$L/sass.txt")  LDL/STL: $(grep -cE 'LDL|STL' "$L/sass.txt")"
timeout 240 $b/tests/swiglu_gemm_cuda --bench > "$L/swiglu_gemm.log" 2>&1; echo "rc $?"
grep -v "^  \(gate\|up\) " "$L/swiglu_gemm.log" | head -60
mark done
