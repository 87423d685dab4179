"""GPU faults on the CUDA backend, through ctypes (a GPU machine with torch; ci/gpu.sh stage gpu_faults):

    python3 native/reference/check_gpu_faults.py --lib build-gpu/libhspmn.so

1. Device out of memory. Every object the calls need is made first (blocks never run, a model, a decoder,
   tensors), then torch (same process, same primary CUDA context) takes every byte of device memory it
   can get, in chunks from 1 GiB down to 2 MiB, so under 2 MiB stay free. Then each of these must fail with
   HSPMN_ERR_OUT_OF_MEMORY and a message giving the bytes:
     forward    hspmn_block_forward (inference: not estimated) of a block never run at [4, 2048, 256]:
                its first scratch cudaMalloc (>= 4 MiB) fails      -> the real allocation path, required
     backward   hspmn_block_backward after a training forward made before the fill, d_out and d_x HOST
                tensors: the backward's staging cudaMalloc fails  -> the real allocation path, required
     block      hspmn_block_create                     (the footprint estimate or cudaMalloc: either counts)
     model      hspmn_model_create                     (either)
     decoder    hspmn_decoder_create                   (either)
     append     hspmn_decoder_append of [2, 1024] tokens to a decoder made before the fill (either), and
                the slots' lengths stay 0
   The line of each names the path: "estimate" (the footprint refusal, "nothing was allocated") or
   "cudaMalloc". Then torch frees its memory and the same calls on the same context succeed: the forward,
   the backward's d_x and the append's logits equal those of a fresh context (relative L2 <= 1e-5; the
   kernels are deterministic, so this is 0 unless a float atomic reorders a sum, and garbage is O(1)).
2. A sticky error. torch indexes a CUDA tensor far out of bounds (index 2^40): a device-side assert
   (cudaErrorAssert) or, where asserts are compiled out, an illegal address, either of which leaves the
   process's CUDA context of the device unusable. Then, on the context made before, a block forward, a
   tensor copy, a block creation and a new context must fail with HSPMN_ERR_DEVICE_LOST (never
   HSPMN_OK with garbage), the message naming the CUDA error and "sticky"; the destroy functions still
   return HSPMN_OK and the process lives to print the summary.
Prints one line per check and a last line "check_gpu_faults: all N checks ok" or "check_gpu_faults: FAILED
...", exiting 1 on any failed expectation.
"""
import argparse
import ctypes as C
import os
import sys

# every kernel loaded at context creation: a module loaded lazily while the device is full would fail
# for a reason that is not the one under test
os.environ.setdefault("CUDA_MODULE_LOADING", "EAGER")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hspmn_ctypes import BF16, F32, HOST, I32, Context, Lib, rel  # noqa: E402

OUT_OF_MEMORY, DEVICE_LOST = 5, 14
CUDA = 1
D, H, HKV = 256, 4, 2  # head dim 64: a size the Triton attention is compiled for
B, S = 4, 2048          # the calls under test: every [B*S, D] bf16 buffer is 4 MiB
WARM_B, WARM_S = 1, 64
V = 256
SEQS, PROMPT = 2, 1024
DEC_LEN = 65536  # K/V caches of ~134 MB: decoder_create under the fill is refused whatever is left
TOL = 1e-5

results = []


def expect(ok, name, detail):
    results.append((name, ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return ok


def bf16_bits(a):
    a = np.ascontiguousarray(a, dtype=np.float32)
    return ((a.view(np.uint32) + 0x8000) >> 16).astype(np.uint16)  # round half up: any rounding will do


class Ctx(Context):
    """A CUDA context whose tensors default to device memory and whose blocks have the check's shape."""

    def __init__(self, lib):
        super().__init__(lib, "cuda", 0)

    def block(self, seed):
        return super().block(block_params(self.lib), seed)


def block_params(lib):
    p = lib.block_default_params()
    p.dim, p.num_heads, p.num_kv_heads = D, H, HKV
    return p


def model_params(lib):
    p = lib.model_default_params()
    p.vocab_size, p.num_layers = V, 2
    p.block.dim, p.block.num_heads, p.block.num_kv_heads = D, H, HKV
    p.block.routing = 1  # threshold: the routing a decoder needs
    return p


class Hog:
    """Device memory held by torch in the same process (the library shares its primary CUDA context)."""

    def __init__(self):
        self.chunks = []

    def fill(self):
        size = 1 << 30
        while size >= 2 << 20:
            try:
                self.chunks.append(torch.empty(size, dtype=torch.uint8, device="cuda"))
            except torch.OutOfMemoryError:
                size //= 2
        torch.cuda.synchronize()
        return sum(c.numel() for c in self.chunks)

    def free(self):
        self.chunks = []
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def forward_params(lib, training):
    fp = lib.forward_default_params()
    fp.training, fp.noise, fp.seed = training, 0, 7
    return fp


def run_forward(lib, blk, x, out):
    return lib.block_forward(blk, C.byref(forward_params(lib, 0)), x, out, None)


def run_backward(lib, blk, d_out, d_x):
    return lib.block_backward(blk, C.byref(lib.backward_default_params()), d_out, None, d_x)


def append(lib, dec, slots, tokens, logits):
    return lib.decoder_append(dec, slots, tokens, logits, None)


def lengths(lib, dec):
    out = []
    for s in range(SEQS):
        n = C.c_int64(-1)
        lib.ok(lib.decoder_length(dec, s, C.byref(n)), "decoder_length")
        out.append(n.value)
    return out


def oom_expected(lib, name, status, need_malloc):
    msg = lib.last_error().decode() if status != 0 else ""
    path = "estimate" if "nothing was allocated" in msg else "cudaMalloc" if "cudaMalloc" in msg else "other"
    ok = status == OUT_OF_MEMORY and "bytes" in msg and (path == "cudaMalloc" if need_malloc else path != "other")
    expect(ok, f"oom {name}", f"status {status}, path {path}: {msg}")


def check_oom(lib, data):
    ctx = Ctx(lib)
    # warm-up on a block of the same shape family: cuBLASLt and the Triton modules are loaded for the device
    warm = ctx.block(1)
    wx = ctx.tensor(BF16, [WARM_B, WARM_S, D], data=bf16_bits(data["x"][:WARM_B, :WARM_S]))
    wo = ctx.tensor(BF16, [WARM_B, WARM_S, D])
    wdx = ctx.tensor(BF16, [WARM_B, WARM_S, D])
    lib.ok(lib.block_forward(warm, C.byref(forward_params(lib, 1)), wx, wo, None), "warm-up training forward")
    lib.ok(run_backward(lib, warm, wo, wdx), "warm-up backward")

    fwd_blk, bwd_blk = ctx.block(11), ctx.block(12)
    x = ctx.tensor(BF16, [B, S, D], data=bf16_bits(data["x"]))
    out = ctx.tensor(BF16, [B, S, D])
    lib.ok(lib.block_forward(bwd_blk, C.byref(forward_params(lib, 1)), x, out, None), "training forward (before fill)")
    d_out = ctx.tensor(BF16, [B, S, D], memory=HOST, data=bf16_bits(data["d_out"]))
    d_x = ctx.tensor(BF16, [B, S, D], memory=HOST)

    mp = model_params(lib)
    model = C.c_void_p()
    lib.ok(lib.model_create(ctx.h, C.byref(mp), 5, C.byref(model)), "model_create (before fill)")
    dec = C.c_void_p()
    lib.ok(lib.decoder_create(model, SEQS, DEC_LEN, C.byref(dec)), "decoder_create (before fill)")
    slots = ctx.tensor(I32, [SEQS], data=np.arange(SEQS, dtype=np.int32))
    tokens = ctx.tensor(I32, [SEQS, PROMPT], data=data["tokens"])
    logits = ctx.tensor(F32, [SEQS, V])
    lib.ok(lib.context_synchronize(ctx.h), "context_synchronize")

    hog = Hog()
    held = hog.fill()
    free, total = torch.cuda.mem_get_info()
    print(f"     torch holds {held} bytes; {free} of {total} bytes of device memory free", flush=True)
    try:
        oom_expected(lib, "forward", run_forward(lib, fwd_blk, x, out), True)
        oom_expected(lib, "backward", run_backward(lib, bwd_blk, d_out, d_x), True)
        h = C.c_void_p()
        oom_expected(lib, "block_create", lib.block_create(ctx.h, C.byref(block_params(lib)), 13, C.byref(h)), False)
        m2 = C.c_void_p()
        oom_expected(lib, "model_create", lib.model_create(ctx.h, C.byref(mp), 6, C.byref(m2)), False)
        d2 = C.c_void_p()
        oom_expected(lib, "decoder_create", lib.decoder_create(model, SEQS, DEC_LEN, C.byref(d2)), False)
        oom_expected(lib, "decoder_append", append(lib, dec, slots, tokens, logits), False)
        lens = lengths(lib, dec)
        expect(lens == [0] * SEQS, "oom decoder_append leaves the slots", f"lengths {lens}")
    finally:
        hog.free()

    # the same calls, same context, memory back
    status = run_forward(lib, fwd_blk, x, out)
    got_fwd = ctx.read(out, BF16, [B, S, D]) if status == 0 else None
    expect(status == 0, "after oom: forward", f"status {status} {lib.last_error().decode() if status else ''}")
    status = run_backward(lib, bwd_blk, d_out, d_x)
    got_dx = ctx.read(d_x, BF16, [B, S, D]) if status == 0 else None
    expect(status == 0, "after oom: backward", f"status {status} {lib.last_error().decode() if status else ''}")
    h = C.c_void_p()
    status = lib.block_create(ctx.h, C.byref(block_params(lib)), 13, C.byref(h))
    expect(status == 0, "after oom: block_create", f"status {status}")
    if status == 0:
        ctx.blocks.append(h)
    m2 = C.c_void_p()
    status = lib.model_create(ctx.h, C.byref(mp), 6, C.byref(m2))
    expect(status == 0, "after oom: model_create", f"status {status}")
    d2 = C.c_void_p()
    status = lib.decoder_create(model, SEQS, DEC_LEN, C.byref(d2))
    expect(status == 0, "after oom: decoder_create", f"status {status}")
    status = append(lib, dec, slots, tokens, logits)
    got_logits = ctx.read(logits, F32, [SEQS, V]) if status == 0 else None
    expect(status == 0 and lengths(lib, dec) == [PROMPT] * SEQS, "after oom: decoder_append",
           f"status {status}, lengths {lengths(lib, dec)}")
    lib.ok(lib.decoder_destroy(d2), "decoder_destroy")
    lib.ok(lib.model_destroy(m2), "model_destroy")
    lib.ok(lib.decoder_destroy(dec), "decoder_destroy")
    lib.ok(lib.model_destroy(model), "model_destroy")
    ctx.close()

    # a fresh context: the same calls on the same inputs
    ref = Ctx(lib)
    fb, bb = ref.block(11), ref.block(12)
    rx = ref.tensor(BF16, [B, S, D], data=bf16_bits(data["x"]))
    ro = ref.tensor(BF16, [B, S, D])
    lib.ok(run_forward(lib, fb, rx, ro), "fresh forward")
    ref_fwd = ref.read(ro, BF16, [B, S, D])
    lib.ok(lib.block_forward(bb, C.byref(forward_params(lib, 1)), rx, ro, None), "fresh training forward")
    rdo = ref.tensor(BF16, [B, S, D], memory=HOST, data=bf16_bits(data["d_out"]))
    rdx = ref.tensor(BF16, [B, S, D], memory=HOST)
    lib.ok(run_backward(lib, bb, rdo, rdx), "fresh backward")
    ref_dx = ref.read(rdx, BF16, [B, S, D])
    rm, rd = C.c_void_p(), C.c_void_p()
    lib.ok(lib.model_create(ref.h, C.byref(mp), 5, C.byref(rm)), "fresh model_create")
    lib.ok(lib.decoder_create(rm, SEQS, DEC_LEN, C.byref(rd)), "fresh decoder_create")
    rs = ref.tensor(I32, [SEQS], data=np.arange(SEQS, dtype=np.int32))
    rt = ref.tensor(I32, [SEQS, PROMPT], data=data["tokens"])
    rl = ref.tensor(F32, [SEQS, V])
    lib.ok(append(lib, rd, rs, rt, rl), "fresh decoder_append")
    ref_logits = ref.read(rl, F32, [SEQS, V])
    lib.ok(lib.decoder_destroy(rd), "decoder_destroy")
    lib.ok(lib.model_destroy(rm), "model_destroy")
    ref.close()

    for name, got, want in (("forward", got_fwd, ref_fwd), ("backward d_x", got_dx, ref_dx),
                            ("decoder_append logits", got_logits, ref_logits)):
        if got is None:
            expect(False, f"after oom: {name} equals a fresh context's", "the call failed")
            continue
        r = rel(got, want)
        finite = bool(np.isfinite(got).all())
        expect(finite and r <= TOL and np.abs(want).max() > 0, f"after oom: {name} equals a fresh context's",
               f"rel {r:.3g} (<= {TOL}), finite {finite}")


def check_sticky(lib, data):
    ctx = Ctx(lib)
    blk = ctx.block(21)
    x = ctx.tensor(BF16, [WARM_B, WARM_S, D], data=bf16_bits(data["x"][:WARM_B, :WARM_S]))
    out = ctx.tensor(BF16, [WARM_B, WARM_S, D])
    status = run_forward(lib, blk, x, out)
    expect(status == 0, "sticky: a forward before the fault", f"status {status}")

    a = torch.zeros(16, device="cuda")
    idx = torch.tensor([1 << 40], device="cuda")
    torch_error = None
    try:
        a[idx].sum().item()
        torch.cuda.synchronize()
    except RuntimeError as e:
        torch_error = str(e).splitlines()[0]
    again = None
    try:
        torch.cuda.synchronize()
    except RuntimeError as e:
        again = str(e).splitlines()[0]
    if not expect(torch_error is not None and again is not None, "sticky: torch's out-of-bounds index faults the context",
                  f"first: {torch_error}; a later synchronize: {again}"):
        return

    names = ("cudaErrorAssert", "cudaErrorIllegalAddress", "cudaErrorLaunchFailure", "CUresult 710", "CUresult 700",
             "CUresult 719")

    def lost(name, status):
        msg = lib.last_error().decode() if status != 0 else ""
        ok = status == DEVICE_LOST and "sticky" in msg and any(n in msg for n in names)
        expect(ok, f"sticky: {name}", f"status {status}: {msg}")

    lost("block forward (first call after the fault)", run_forward(lib, blk, x, out))
    lost("block forward again", run_forward(lib, blk, x, out))
    buf = np.zeros([WARM_B, WARM_S, D], dtype=np.uint16)
    lost("tensor_copy_out", lib.tensor_copy_out(out, buf.ctypes.data, buf.nbytes))
    h = C.c_void_p()
    lost("block_create", lib.block_create(ctx.h, C.byref(block_params(lib)), 22, C.byref(h)))
    p = lib.context_default_params()
    p.backend = CUDA
    c2 = C.c_void_p()
    lost("context_create", lib.context_create(C.byref(p), C.byref(c2)))
    statuses = [lib.block_destroy(blk)] + [lib.tensor_destroy(t) for t in ctx.tensors] + [lib.context_destroy(ctx.h)]
    expect(all(s == 0 for s in statuses), "sticky: destroy functions still succeed", f"statuses {statuses}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="build-gpu/libhspmn.so")
    a = ap.parse_args()
    lib = Lib(a.lib)
    torch.cuda.init()
    rng = np.random.default_rng(0)
    data = {"x": rng.standard_normal((B, S, D), dtype=np.float32),
            "d_out": rng.standard_normal((B, S, D), dtype=np.float32),
            "tokens": rng.integers(0, V, size=(SEQS, PROMPT), dtype=np.int32)}
    try:
        check_oom(lib, data)
    except Exception as e:  # an unexpected failure is a failed check, and the sticky part still runs
        expect(False, "oom part", f"{type(e).__name__}: {e}")
    try:
        check_sticky(lib, data)
    except Exception as e:
        expect(False, "sticky part", f"{type(e).__name__}: {e}")
    failed = [n for n, ok in results if not ok]
    if failed:
        print(f"check_gpu_faults: FAILED {len(failed)} of {len(results)} checks: {', '.join(failed)}", flush=True)
    else:
        print(f"check_gpu_faults: all {len(results)} checks ok", flush=True)
    # torch's exit handlers on a faulted context must not decide the exit status
    os._exit(1 if failed else 0)


if __name__ == "__main__":
    main()
