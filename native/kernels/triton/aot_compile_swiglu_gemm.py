"""Ahead-of-time compile the swiglu_gemm Triton kernel to cubins plus JSON launch metadata.

    .venv/bin/python native/kernels/triton/aot_compile_swiglu_gemm.py --arch 90 --out DIR [--config NAME]

Writes DIR/swiglu_gemm_{infer,train}_sm<arch>.cubin and .json (the same layout as aot_compile.py's,
which this reuses: compile, parameter-buffer offsets, the cuobjdump check of each cubin): `infer`
writes act only, `train` also gate and up. Each uses one configuration of swiglu_gemm.CONFIGS
(DEFAULT and DEFAULT_TRAIN unless --config / --config-train name others), recorded in the JSON. The grid is persistent: one program
per SM ("sm_count"), whatever the shape. The kernel builds its TMA descriptors on the device, so it
needs Triton's global scratch: global_scratch_size bytes per program (the loader passes it).
sm_90 and later only (TMA); exit status as aot_compile.py's.
"""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import aot_compile as aot  # noqa: E402  (exits 2 with the install hint when Triton is missing)
import swiglu_gemm as sg  # noqa: E402

ARG_TYPES = {
    "X": ("*bf16", "c [N, D]"), "WG": ("*bf16", "W_gate [F, D]"), "WU": ("*bf16", "W_up [F, D]"),
    "ACT": ("*bf16", "act [N, F]"),
    "GATE": ("*bf16", "gate [N, F] (train; the infer kernel takes it unused)"),
    "UP": ("*bf16", "up [N, F] (train; the infer kernel takes it unused)"),
    "N": ("i32", "rows, >= 0"), "F": ("i32", "hidden width, multiple of 8"), "D": ("i32", "model width, multiple of 8"),
}


def compile_variant(train, config_name, arch):
    cfg = sg.CONFIGS[config_name]
    fn = sg.swiglu_gemm_kernel
    constexprs = {"BLOCK_M": cfg.block_m, "BLOCK_N": cfg.block_n, "BLOCK_K": cfg.block_k, "GROUP_M": cfg.group_m,
                  "TRAIN": train, "WARP_SPECIALIZE": cfg.warp_specialize}
    types = {n: ARG_TYPES[n] for n in fn.arg_names if n not in constexprs}
    attrs = aot.pointer_hints(fn, types)
    for n in ("F", "D"):  # multiples of 8, checked by both launchers: row strides then are 16-byte multiples
        attrs[(fn.arg_names.index(n), )] = [["tt.divisibility", sg.ALIGN]]
    cubin, common = aot.compile_kernel(fn, types, constexprs, attrs, cfg.num_warps, cfg.num_stages, arch)
    meta = {
        "kernel": f"swiglu_gemm_{'train' if train else 'infer'}",
        "config": config_name,
        "tile": [cfg.block_m, cfg.block_n, cfg.block_k],
        "head_dims": None,  # not an attention kernel: the loader's head-dim match is 0
        "grid": ["sm_count", "1", "1"],
        "shapes": "N >= 0; D, F multiples of 8; all < 2**31; tensors contiguous, 16-byte aligned",
    }
    meta.update(common)
    return cubin, meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability as an integer (>= 90: TMA)")
    ap.add_argument("--out", type=Path, required=True, help="output folder (created)")
    ap.add_argument("--config", default=sg.DEFAULT, choices=list(sg.CONFIGS), help="the inference kernel's")
    ap.add_argument("--config-train", default=sg.DEFAULT_TRAIN, choices=list(sg.CONFIGS), help="the training kernel's")
    a = ap.parse_args(argv)
    if a.arch < 90:
        print(f"error: swiglu_gemm needs TMA (sm_90 or later), not sm_{a.arch}", file=sys.stderr)
        return 1
    jobs = [(f"swiglu_gemm_{'train' if train else 'infer'}_sm{a.arch}",
             lambda train=train: compile_variant(train, a.config_train if train else a.config, a.arch))
            for train in (False, True)]
    return aot.run_jobs(a.out, a.arch, jobs)


if __name__ == "__main__":
    sys.exit(main())
