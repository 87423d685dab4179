"""Ahead-of-time compile the sqdk_attention Triton kernels to cubins plus JSON launch metadata.

    .venv/bin/python native/kernels/triton/aot_compile.py --arch 90 --out DIR

For every kernel and variant (bf16) this writes DIR/<kernel>_<variant>_sm<arch>.cubin and .json;
a variant is `d<Dh>` (HEAD_DIM = Dh = BLOCK_D, a constexpr: no column mask) or `pad<BLOCK_D>`
(HEAD_DIM a runtime i32 argument, columns masked; serves every even Dh listed in its JSON's
head_dims), for BLOCK_D in 16, 32, 64, 128 (sqdk_attention.HEAD_DIMS says why). libhspmn's own
loader reads them (cuModuleLoadData,
cuModuleGetFunction, cuFuncSetAttribute for the dynamic shared memory, cuLaunchKernel). No GPU is
needed: Triton compiles for the target named here and its bundled ptxas assembles the cubin.

This follows triton/tools/compile.py (the same ASTSource, options and 16-byte pointer hints) but
keeps the cubin and the metadata instead of emitting a C launcher: the C stub hard-codes device 0,
exits the process on a CUDA error, and cannot pass the scratch pointers of kernels that need them.

Each cubin is checked before the run succeeds: ELF magic and the kernel symbol; where cuobjdump is
found (Triton ships one), also the parameter list in the cubin's .nv.info (count, sizes, offsets:
the listed arguments plus the two scratch pointers) and the thread count it was built for.
Exit status: 0 ok, 1 a check failed, 2 Triton missing.
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
INSTALL_HINT = (
    "Triton is not installed in this Python. Install the pinned offline wheel into the venv:\n"
    "  .venv/bin/pip install --index-url file:///opt/pypi/simple "
    "--extra-index-url file:///opt/pypi-more/simple triton==3.6.0\n"
    "(or `pip install triton==3.6.0` from PyPI), then rerun with that venv's python.")

try:
    import triton
    from triton.backends.compiler import GPUTarget
except ImportError:
    sys.stderr.write(INSTALL_HINT + "\n")
    sys.exit(2)

sys.path.insert(0, str(HERE))
import sqdk_attention as sk  # noqa: E402

TRITON_VERSION = "3.6.0"  # the cubins' parameter lists (trailing scratch pointers) are this version's
MAX_SHARED_SM90 = 232448  # cudaDevAttrMaxSharedMemoryPerBlockOptin on H100/H200 (227 KiB)

# Argument types by name, with the shape each one points to (the layout in sqdk_attention.py).
ARG_TYPES = {
    "Q": ("*bf16", "[B, C, H, Dh]"), "O": ("*bf16", "[B, C, H, Dh]"),
    "DO": ("*bf16", "[B, C, H, Dh]"), "DQ": ("*bf16", "[B, C, H, Dh]"),
    "K": ("*bf16", "[B, S, Hkv, Dh]"), "V": ("*bf16", "[B, S, Hkv, Dh]"),
    "DK": ("*bf16", "[B, S, Hkv, Dh]"), "DV": ("*bf16", "[B, S, Hkv, Dh]"),
    "Lse": ("*fp32", "[B, H, C]"), "Delta": ("*fp32", "[B, H, C]"),
    "Pos": ("*i32", "[B, C]"), "Counts": ("*i32", "[B]"),
    "C": ("i32", "query slots per sequence"), "S": ("i32", "tokens per sequence"),
    "H": ("i32", "query heads"), "HKV": ("i32", "kv heads, divides H"),
    "DKV_STRIDE": ("i32", "elements between the dK (and dV) rows of two tokens: a multiple of Dh, >= HKV * Dh"),
    "HEAD_DIM": ("i32", "Dh, even, within the variant's head_dims (padded variants only)"),
}
C_TYPES = {"*bf16": "void*", "*fp32": "float*", "*i32": "int32_t*", "i32": "int32_t"}
ARG_SIZES = {"*bf16": 8, "*fp32": 8, "*i32": 8, "i32": 4}

# kernel -> (tile key in sk.TILES, grid rule; B = batch; names are the kernel's arguments). A kernel
# whose tile key a variant lacks (or maps to None) is not compiled for that variant.
KERNELS = {
    "sqdk_attention_fwd": ("fwd", ["cdiv(C * (H // HKV), BLOCK_M)", "B * HKV", "1"]),
    "sqdk_attention_fwd_few": ("fwd_few", ["cdiv(C * (H // HKV), BLOCK_M)", "B * HKV", "1"]),
    "sqdk_attention_bwd_preprocess": ("preprocess", ["cdiv(C, BLOCK_M)", "B * H", "1"]),
    "sqdk_attention_bwd_dkdv": ("dkdv", ["cdiv(S, BLOCK_N)", "B * HKV", "1"]),
    "sqdk_attention_bwd_dq": ("dq", ["cdiv(C * (H // HKV), BLOCK_M)", "B * HKV", "1"]),
}
# launch order of the backward: delta first, then dkdv and dq (independent of each other)
# the Triton function of a kernel compiled under another name (another tile of the same code)
FUNCTIONS = {"sqdk_attention_fwd_few": "sqdk_attention_fwd"}
ORDER = {"sqdk_attention_fwd": 0, "sqdk_attention_fwd_few": 0, "sqdk_attention_bwd_preprocess": 1,
         "sqdk_attention_bwd_dkdv": 2, "sqdk_attention_bwd_dq": 2}


def find_cuda_tool(name):
    """Triton's bundled copy first (it matches the ptxas that built the cubin), then CUDA's."""
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    candidates = [str(bundled)] + sorted(glob.glob(f"/usr/local/cuda*/bin/{name}"), reverse=True)
    found = shutil.which(name)
    if found:
        candidates.append(found)
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


def variants(block_ds):
    """(name, block_d, exact, head dims served) per variant: exact d<BLOCK_D> serves BLOCK_D alone,
    pad<BLOCK_D> the other even head dims whose tile width is BLOCK_D."""
    out = []
    for block_d in block_ds:
        padded = [d for d in sk.HEAD_DIMS if sk.block_d_for(d) == block_d and d != block_d]
        out.append((f"d{block_d}", block_d, True, [block_d]))
        if padded:
            out.append((f"pad{block_d}", block_d, False, padded))
    return out


def compile_kernel(fn, arg_types, constexprs, attrs, num_warps, num_stages, arch):
    """Compiles fn for sm_<arch>: (cubin, metadata common to every kernel family). arg_types: name ->
    (Triton type, what it is) for the non-constexpr arguments; the metadata's args list them in order
    with C types, sizes and parameter-buffer offsets, plus Triton's two trailing scratch pointers."""
    signature, args = {}, []
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        ty, what = arg_types[name]
        signature[name] = ty
        args.append({"name": name, "type": ty, "c_type": C_TYPES[ty], "size": ARG_SIZES[ty], "what": what})
    target = GPUTarget("cuda", arch, 32)
    backend = triton.compiler.make_backend(target)
    options = backend.parse_options({"num_warps": num_warps, "num_stages": num_stages})
    src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    t0 = time.perf_counter()
    cc = triton.compile(src, target=target, options=options.__dict__)
    seconds = time.perf_counter() - t0
    md = cc.metadata
    args.append({"name": "global_scratch", "type": "*i8", "c_type": "void*", "size": 8,
                 "what": "Triton's global scratch: NULL when global_scratch_size is 0, else "
                         "grid_x*grid_y*grid_z*num_ctas*global_scratch_size bytes"})
    args.append({"name": "profile_scratch", "type": "*i8", "c_type": "void*", "size": 8,
                 "what": "Triton's profiler scratch: NULL when profile_scratch_size is 0"})
    offset = 0
    for a in args:  # the CUDA parameter buffer: each argument at its natural alignment
        offset = (offset + a["size"] - 1) // a["size"] * a["size"]
        a["offset"] = offset
        offset += a["size"]
    meta = {
        "symbol": md.name,
        "arch": f"sm_{arch}" + ("a" if arch == 90 else ""),
        "dtype": "bf16",
        "constexprs": constexprs,
        "num_warps": md.num_warps,
        "num_stages": md.num_stages,
        "num_ctas": md.num_ctas,
        "block": [md.num_warps * md.warp_size, 1, 1],
        "shared_bytes": md.shared,
        "shared_note": "pass shared_bytes as cuLaunchKernel's sharedMemBytes; above 49152 first call "
                       "cuFuncSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared_bytes)",
        "args": args,
        "global_scratch_size": md.global_scratch_size,
        "global_scratch_align": md.global_scratch_align,
        "profile_scratch_size": md.profile_scratch_size,
        "profile_scratch_align": md.profile_scratch_align,
        "launch_cooperative_grid": md.launch_cooperative_grid,
        "launch_pdl": md.launch_pdl,
        "triton_version": md.triton_version,
        "triton_hash": md.hash,
        "compile_seconds": round(seconds, 2),
    }
    return cc.asm["cubin"], meta


def pointer_hints(fn, signature_types):
    """Pointers are 16-byte aligned (cudaMalloc gives 256): lets Triton vectorise loads and stores."""
    return {(i, ): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
            if signature_types.get(n, ("", ))[0].startswith("*")}


def compile_one(kernel_name, block_d, exact, head_dims, arch):
    fn = getattr(sk, FUNCTIONS.get(kernel_name, kernel_name))
    tile_key, grid = KERNELS[kernel_name]
    tile = sk.tiles_for(head_dims[0])[tile_key]
    constexprs = {"BLOCK_D": block_d, "BLOCK_M": tile.block_m}
    if exact:  # a constexpr HEAD_DIM drops out of the parameter list
        constexprs["HEAD_DIM"] = block_d
    if "BLOCK_N" in fn.arg_names:
        constexprs["BLOCK_N"] = tile.block_n
    types = {n: ARG_TYPES[n] for n in fn.arg_names if n not in constexprs}
    attrs = pointer_hints(fn, types)
    if not exact:  # head dims are even: row strides H*Dh and head offsets h*Dh then are too
        attrs[(fn.arg_names.index("HEAD_DIM"), )] = [["tt.divisibility", 2]]
    if "DKV_STRIDE" in fn.arg_names:  # a multiple of Dh (the launcher checks): 16 for exact Dh >= 16, 2 padded
        attrs[(fn.arg_names.index("DKV_STRIDE"), )] = [["tt.divisibility", 16 if exact else 2]]
    cubin, common = compile_kernel(fn, types, constexprs, attrs, tile.num_warps, tile.num_stages, arch)
    meta = {
        "kernel": kernel_name,
        "launch_order": ORDER[kernel_name],
        "head_dim": block_d if exact else None,
        "block_d": block_d,
        "head_dims": [head_dims[0], head_dims[-1], 2],
        "grid": grid,
    }
    meta.update(common)
    return cubin, meta


def write_checked(out, stem, cubin, meta, arch):
    """Writes out/<stem>.cubin and .json after checking the cubin against the metadata; prints one
    line; returns the errors found (empty: ok)."""
    cubin_path = out / f"{stem}.cubin"
    cubin_path.write_bytes(cubin)
    meta["cubin"] = cubin_path.name
    errs = check_cubin(cubin_path, meta)
    if arch == 90 and meta["shared_bytes"] > MAX_SHARED_SM90:
        errs.append(f"{stem}: {meta['shared_bytes']} bytes of shared memory > {MAX_SHARED_SM90}")
    if meta["global_scratch_size"] or meta["profile_scratch_size"]:
        print(f"  note: {stem} needs scratch memory (global {meta['global_scratch_size']}, "
              f"profile {meta['profile_scratch_size']} bytes per program)")
    (out / f"{stem}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{'FAIL' if errs else 'ok':4} {stem:44} {meta['compile_seconds']:5.1f} s  "
          f"cubin {len(cubin):7d} B  shared {meta['shared_bytes']:6d} B  "
          f"regs {meta.get('registers')} stack {meta.get('stack_bytes')}  warps {meta['num_warps']} stages {meta['num_stages']}")
    return errs


def check_cubin(path, meta):
    """Errors found in the cubin at path (empty list: ok); fills meta["registers"] when it can."""
    errors = []
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        return [f"{path.name}: not an ELF file"]
    if meta["symbol"].encode() + b"\0" not in data:
        errors.append(f"{path.name}: symbol {meta['symbol']} not in the string table")
    cuobjdump = find_cuda_tool("cuobjdump")
    if cuobjdump is None:
        readelf = shutil.which("readelf")
        if readelf:
            out = subprocess.run([readelf, "-sW", str(path)], capture_output=True, text=True).stdout
            if not re.search(rf"FUNC\s+GLOBAL.*\s{re.escape(meta['symbol'])}$", out, re.M):
                errors.append(f"{path.name}: readelf lists no global function {meta['symbol']}")
        meta["registers"] = None
        return errors
    listed = subprocess.run([cuobjdump, "--list-elf", str(path)], capture_output=True, text=True)
    if listed.returncode != 0:
        return errors + [f"{path.name}: cuobjdump --list-elf failed: {listed.stderr.strip()}"]
    usage = subprocess.run([cuobjdump, "--dump-resource-usage", str(path)], capture_output=True, text=True).stdout
    m = re.search(rf"Function {re.escape(meta['symbol'])}:\s*REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)",
                  usage)
    if not m:
        errors.append(f"{path.name}: no resource usage for {meta['symbol']}")
    else:
        meta["registers"], meta["stack_bytes"], meta["static_shared_bytes"], meta["local_bytes"] = map(int, m.groups())
        if meta["stack_bytes"] or meta["local_bytes"]:  # ptxas puts register spills in the stack frame
            print(f"  note: {path.name} spills registers (stack {meta['stack_bytes']}, "
                  f"local {meta['local_bytes']} bytes per thread)")
    elf = subprocess.run([cuobjdump, "-elf", str(path)], capture_output=True, text=True).stdout
    params = sorted((int(o, 16), int(off, 16), int(sz, 16)) for o, off, sz in re.findall(
        r"Ordinal\s*:\s*(0x[0-9a-f]+)\s+Offset\s*:\s*(0x[0-9a-f]+)\s+Size\s*:\s*(0x[0-9a-f]+)", elf))
    want = [(i, a["offset"], a["size"]) for i, a in enumerate(meta["args"])]
    if params != want:
        errors.append(f"{path.name}: cubin parameters (ordinal, offset, size) {params} != metadata {want}")
    m = re.search(r"EIATTR_REQNTID\s+Format:\s*\S+\s+Value:\s*(0x[0-9a-f]+)", elf)
    if not m or int(m.group(1), 16) != meta["block"][0]:
        errors.append(f"{path.name}: cubin thread count {m.group(1) if m else 'missing'} != {meta['block'][0]}")
    return errors


def run_jobs(out, arch, jobs):
    """Compiles, writes and checks each (stem, compile() -> (cubin, meta)) of jobs into out; prints a
    line each and the errors; the exit status (1 when any compile or check failed)."""
    out.mkdir(parents=True, exist_ok=True)
    errors = []
    t_all = time.perf_counter()
    for stem, compile_job in jobs:
        try:
            cubin, meta = compile_job()
        except Exception as e:  # a compile error names the variant, then the run fails
            errors.append(f"{stem}: compile failed: {type(e).__name__}: {e}")
            continue
        errors += write_checked(out, stem, cubin, meta, arch)
    print(f"compiled in {time.perf_counter() - t_all:.1f} s")
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability as an integer (90: H100/H200)")
    ap.add_argument("--out", type=Path, required=True, help="output folder (created)")
    ap.add_argument("--block-d", type=int, nargs="+", default=list(sk.BLOCK_DS), choices=list(sk.BLOCK_DS),
                    help="tile widths to compile (each: the exact and the padded variant)")
    ap.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=list(KERNELS))
    a = ap.parse_args(argv)
    if triton.__version__ != TRITON_VERSION:
        print(f"warning: Triton {triton.__version__}; the metadata layout was checked with {TRITON_VERSION}")
    jobs = [(f"{kernel}_{name}_sm{a.arch}",
             lambda kernel=kernel, v=(block_d, exact, head_dims): compile_one(kernel, *v, a.arch))
            for name, block_d, exact, head_dims in variants(a.block_d) for kernel in a.kernels
            if sk.tiles_for(head_dims[0]).get(KERNELS[kernel][0]) is not None]
    return run_jobs(a.out, a.arch, jobs)


if __name__ == "__main__":
    sys.exit(main())
