#!/usr/bin/env bash
# Seventeenth session, call D: ncu on the fused backward (swiglu_backward_gemm) against the unfused path's
# GEMM and swiglu_backward at N = 16384: why it runs at 0.64-0.76x of them.
set -uo pipefail
OUT="${OUT:-/tmp/out}"; L="$OUT/l"; mkdir -p "$L"
pack() { tar -czf "$OUT/logs.tgz" -C "$OUT" l && rm -rf "$L"; }
trap pack EXIT
b=build-gpu
timeout 170 ncu --clock-control none --set full -k regex:"swiglu_gemm_kernel|swiglu_backward_kernel|nvjet" -c 3 \
  --export "$L/prof" --force-overwrite $b/tests/swiglu_backward_gemm_cuda --profile > "$L/ncu-run.log" 2>&1
echo "ncu rc $?"; tail -2 "$L/ncu-run.log"
ncu --import "$L/prof.ncu-rep" --page details --print-units base > "$L/details.txt" 2>&1
ncu --import "$L/prof.ncu-rep" --page raw --csv > "$L/raw.csv" 2>&1; gzip "$L/raw.csv"
ncu --import "$L/prof.ncu-rep" --page source --print-source sass --csv > "$L/source.csv" 2>&1; gzip "$L/source.csv"; rm -f "$L/prof.ncu-rep"
grep -E "^  [a-zA-Z_0-9]|Duration|Compute \(SM\) Throughput|DRAM Throughput|L2 Hit|Issue Slots Busy|Registers Per|No Eligible" "$L/details.txt" | cut -c1-140 | head -40
