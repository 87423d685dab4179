#!/usr/bin/env bash
# Sixteenth session, call C: (1) the 1B LM step with and without the fused training launch, two pairs
# interleaved (call A: 44.4 % unset, 44.9 % with =1, one sample each); (2) ncu on down_residual against the
# block's unfused path at N = 65536 (why its main loop trails cuBLASLt's).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; L="$OUT/l"; mkdir -p "$L"
T0=$SECONDS; mark() { echo "[$((SECONDS - T0)) s] $*"; }
pack() { tar -czf "$OUT/logs.tgz" -C "$OUT" l && rm -rf "$L"; }
trap pack EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv,noheader | tee "$L/env.txt"
b=build-gpu
cmake -S native -B $b -DCMAKE_BUILD_TYPE=Release -DHSPMN_CUDA=ON -DHSPMN_CUDA_ARCHS=90 -DHSPMN_PYTHON=python3 > "$L/configure.log" 2>&1
cmake --build $b -j 16 --target hspmn hspmn_lm_bench down_residual_cuda > "$L/build.log" 2>&1 || { tail -30 "$L/build.log"; exit 1; }
mark built
for r in 1 2; do for s in unset 1; do
  mark "lm HSPMN_SWIGLU_GEMM=$s run $r"
  ( [[ $s == 1 ]] && export HSPMN_SWIGLU_GEMM=1; timeout 90 $b/tools/hspmn_lm_bench --backend cuda --batch 8 --seq 2048 --steps 6 --warmup 2 --json "$L/lm-$s-$r.json" 2>&1 | tail -1 )
done; done
mark ncu
timeout 240 ncu --clock-control none --set full --export "$L/prof" --force-overwrite $b/tests/down_residual_cuda --profile > "$L/ncu-run.log" 2>&1
echo "ncu rc $?"; tail -3 "$L/ncu-run.log"
ncu --import "$L/prof.ncu-rep" --page details --print-units base > "$L/details.txt" 2>&1
ncu --import "$L/prof.ncu-rep" --page raw --csv > "$L/raw.csv" 2>&1; gzip "$L/raw.csv"
ncu --import "$L/prof.ncu-rep" --page source --print-source sass --csv > "$L/source.csv" 2>&1; gzip "$L/source.csv"; rm -f "$L/prof.ncu-rep"
grep -E "^  [a-zA-Z_0-9]|Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|DRAM Throughput|L2 Hit|Registers Per|Achieved Occ|Issue Slots Busy" "$L/details.txt" | cut -c1-150 | head -80
mark done
