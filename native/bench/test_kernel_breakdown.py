"""Tests of kernel_breakdown.py's parsing, categories, aggregation and FLOP count on a fabricated
profiler trace (the GPU part cannot run without a GPU): python3 native/bench/test_kernel_breakdown.py
"""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernel_breakdown as K  # noqa: E402
from check_harness import Tests  # noqa: E402

NS = "void hspmn::cuda::(anonymous namespace)::"
# Names as CUPTI reports them (demangled): ours, Triton's, cuBLASLt's, copies; one unknown.
RMS_FWD = NS + "rms_norm_forward_kernel<true>(__nv_bfloat16 const*, __nv_bfloat16 const*, float, long, long, " \
               "__nv_bfloat16*, float*)"
RMS_FWD_SCALAR = NS + "rms_norm_forward_kernel<false>(__nv_bfloat16 const*, __nv_bfloat16 const*, float, long, " \
                      "long, __nv_bfloat16*, float*)"
ROPE = NS + "rope_kernel<float>(float const*, __nv_bfloat16*, long, long, long, int const*, int const*, long, " \
            "long, float const*, float const*, float)"
NVJET = "nvjet_tst_192x192_64x4_2x1_v_bz_coopA_TNT"
CUTLASS = "void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_16x16_128x2_tn_align8>(" \
          "cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_16x16_128x2_tn_align8::Params)"
SPLITK = "void splitKreduce_kernel<32, 16, int, float, __nv_bfloat16, float, __nv_bfloat16, true, false, false>(" \
         "cublasSplitKParams<float>, float const*, __nv_bfloat16 const*, __nv_bfloat16*, float const*, long)"
XMMA = "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_" \
       "kernel__5x_cublas"

test = Tests()


def ev(name, dur, cat="kernel", ph="X"):
    return {"ph": ph, "cat": cat, "name": name, "pid": 0, "tid": 7, "ts": 0.0, "dur": dur}


@test
def short_names():
    assert K.short_name(RMS_FWD) == "rms_norm_forward_kernel<true>", K.short_name(RMS_FWD)
    assert K.short_name(ROPE) == "rope_kernel<float>"
    assert K.short_name(CUTLASS).startswith("Kernel2<cutlass_80_wmma"), K.short_name(CUTLASS)
    assert K.short_name(SPLITK).startswith("splitKreduce_kernel<32, 16, int"), K.short_name(SPLITK)
    assert K.short_name("sqdk_attention_fwd") == "sqdk_attention_fwd"
    assert K.base_name(RMS_FWD) == "rms_norm_forward_kernel"
    # a name with a template argument list holding '::' and spaces keeps them
    n = "void ns::f<ns::A<int>, 3>(int)"
    assert K.short_name(n) == "f<ns::A<int>, 3>", K.short_name(n)


@test
def categories():
    cases = {
        RMS_FWD: "rms_norm",
        # the pair kernels (a block's two norms of one x; the forward also writes the residual's f32 x)
        NS + "rms_norm_pair_forward_kernel<true>(__nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16 const*, "
             "float, long, long, __nv_bfloat16*, __nv_bfloat16*, float*, float*)": "rms_norm",
        NS + "rms_norm_pair_backward_dx_kernel(__nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16 const*, "
             "float const*, float const*, float const*, long, long, float*)": "rms_norm",
        NS + "rms_norm_pair_backward_dw_kernel(__nv_bfloat16 const*, float const*, float const*, float const*, long, "
             "long, long, float*, float*)": "rms_norm",
        ROPE: "rope",
        NS + "causal_conv_backward_dw_kernel(__nv_bfloat16 const*, float const*, long, long, long, long, long, "
             "float*)": "causal_conv",
        NS + "swiglu_backward_kernel<true>(__nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16 const*, long, "
             "__nv_bfloat16*, __nv_bfloat16*)": "swiglu",
        NS + "router_forward_kernel(__nv_bfloat16 const*, ...)": "router / route_select / aux",
        NS + "route_select_kernel(float const*, long, long, int, long, long, int*, int*)": "router / route_select / aux",
        NS + "aux_loss_backward_kernel(float const*, long, float, float, float, float const*, float*)":
            "router / route_select / aux",
        NS + "gumbel_noise_kernel(unsigned long, long, int, long, long, float*)": "router / route_select / aux",
        NS + "gate_scatter_backward_kernel(float const*, __nv_bfloat16 const*, int const*, int const*, long, long, "
             "long, __nv_bfloat16*, float*)": "gather / scatter / gate",
        NS + "gather_selected_kernel(__nv_bfloat16 const*, int const*, int const*, long, long, long, "
             "__nv_bfloat16*)": "gather / scatter / gate",
        NS + "bf16_to_f32_kernel(__nv_bfloat16 const*, float*, long)": K.COPIES,
        NS + "reduce_partials_kernel(float const*, long, long, float*)": K.COPIES,
        NS + "non_finite_kernel<true>(void const*, long, bool, unsigned long long*)": "non_finite scan (NaN policy)",
        "void hspmn::cuda::sm90a::(anonymous namespace)::swiglu_gemm_kernel<false, 2>(CUtensorMap_st, CUtensorMap_st, "
        "CUtensorMap_st, int, int, int, __nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*, long)": K.FUSED_SWIGLU,
        "sqdk_attention_fwd": K.ATTN_FWD,
        "sqdk_attention_bwd_preprocess": K.ATTN_BWD,
        "sqdk_attention_bwd_dkdv": K.ATTN_BWD,
        "sqdk_attention_bwd_dq": K.ATTN_BWD,
        NVJET: K.GEMM,
        CUTLASS: K.GEMM,
        SPLITK: K.GEMM,
        XMMA: K.GEMM,
        "void some_new_kernel(int)": K.OTHER,
    }
    for name, want in cases.items():
        got = K.categorize(name)
        assert got == want, f"{name}: {got} != {want}"
    assert K.categorize("Memcpy DtoD (Device -> Device)", "gpu_memcpy") == K.COPIES
    assert K.categorize("Memset (Device)", "gpu_memset") == K.COPIES
    assert set(want for want in cases.values()) <= set(K.CATEGORIES)


@test
def gemm_flop_count():
    # B=2 S=10 D=8 H=2 Hkv=1 (Dh=4, KV=4) mlp 4 (F=32) rho 0.2 -> k = 2, BC = 4
    N, D, F, KV, BC = 20, 8, 32, 4, 4
    fwd = 3 * 2 * N * D * F + 2 * 2 * N * D * KV + 2 * 2 * BC * D * D
    assert K.gemm_flops(2, 10, 8, 2, 1, 4, 0.2, False) == fwd
    assert K.gemm_flops(2, 10, 8, 2, 1, 4, 0.2, True) == 3 * fwd
    # k = max(1, floor(S * f32(rho))): S=50, rho=0.04 is 1 (f32 product would round up to 2)
    assert K.topk_count(50, 0.04) == 1
    assert K.topk_count(20, 0.04) == 1
    assert K.topk_count(4096, 0.2) == 819
    assert K.topk_count(5, 1.0) == 5
    # the default inference config: 64 x 4096 tokens, D 2048, F 8192, KV 512, 819 of 4096 selected
    N, D, F, KV, BC = 64 * 4096, 2048, 8192, 512, 64 * 819
    assert K.gemm_flops(64, 4096, 2048, 16, 4, 4, 0.2, False) == 6 * N * D * F + 4 * N * D * KV + 4 * BC * D * D


@test
def aggregation():
    iters = 2
    trace = {"traceEvents": [
        # per iteration: 3 GEMM kernels (600 us), attention fwd 100, two rms_norm variants, a memcpy, a memset
        *[ev(NVJET, 250.0) for _ in range(iters)],
        *[ev(XMMA, 300.0) for _ in range(iters)],
        *[ev(SPLITK, 50.0) for _ in range(iters)],
        *[ev("sqdk_attention_fwd", 100.0) for _ in range(iters)],
        *[ev(RMS_FWD, 20.0) for _ in range(2 * iters)],
        *[ev(RMS_FWD_SCALAR, 10.0) for _ in range(iters)],
        *[ev("Memcpy DtoD (Device -> Device)", 15.0, cat="gpu_memcpy") for _ in range(iters)],
        *[ev("Memset (Device)", 5.0, cat="gpu_memset") for _ in range(iters)],
        *[ev("void some_new_kernel(int)", 30.0) for _ in range(iters)],
        # not device activity: host-side runtime calls, flow arrows, instant events
        ev("cudaLaunchKernel", 5000.0, cat="cuda_runtime"),
        ev("cuLaunchKernel", 5000.0, cat="cuda_driver"),
        ev("ac2g", 0.0, cat="ac2g", ph="s"),
        {"ph": "i", "cat": "kernel", "name": "marker", "ts": 0.0},
    ]}
    events = K.device_events(trace)
    assert len(events) == 2 * 9 + 2, len(events)
    flops = 10 ** 9  # per iteration
    r = K.aggregate(events, iters, flops)
    per_iter_us = 250 + 300 + 50 + 100 + 40 + 10 + 15 + 5 + 30
    assert math.isclose(r["gpu_ms_per_iter"], per_iter_us / 1e3)
    cats = {c["name"]: c for c in r["categories"]}
    assert math.isclose(cats[K.GEMM]["ms_per_iter"], 0.6)
    assert math.isclose(cats[K.GEMM]["calls_per_iter"], 3.0)
    assert math.isclose(cats[K.GEMM]["percent"], 100 * 600 / per_iter_us)
    assert math.isclose(cats[K.ATTN_FWD]["ms_per_iter"], 0.1)
    assert math.isclose(cats["rms_norm"]["ms_per_iter"], 0.05)
    assert math.isclose(cats["rms_norm"]["calls_per_iter"], 3.0)
    assert math.isclose(cats[K.COPIES]["ms_per_iter"], 0.02)
    assert math.isclose(cats[K.OTHER]["ms_per_iter"], 0.03)
    assert math.isclose(sum(c["percent"] for c in r["categories"]), 100.0)
    assert [c["name"] for c in r["categories"]][0] == K.GEMM  # sorted by time
    assert K.ATTN_BWD not in cats  # no category row without a call
    # the two rms_norm instantiations stay apart; the kernel table is sorted by time
    names = [k["name"] for k in r["kernels"]]
    assert "rms_norm_forward_kernel<true>" in names and "rms_norm_forward_kernel<false>" in names
    assert names[0] == K.short_name(XMMA)
    k = {k["name"]: k for k in r["kernels"]}
    assert math.isclose(k["rms_norm_forward_kernel<true>"]["avg_us"], 20.0)
    assert math.isclose(k["rms_norm_forward_kernel<true>"]["calls_per_iter"], 2.0)
    assert k["rms_norm_forward_kernel<true>"]["full_name"] == RMS_FWD
    # 1 GFLOP in 0.6 ms
    assert math.isclose(r["gemm"]["tflops"], 1e9 / 0.6e-3 / 1e12)

    r.update(per_kernel=True, wall_ms_per_iter=1.5,
             config={"train": True, "B": 2, "S": 10})
    table = K.format_tables(r)
    assert "GEMM (cuBLASLt)" in table and "rms_norm_forward_kernel<true>" in table and "TFLOP/s" in table
    line = K.summary_line(r)
    assert line.startswith("breakdown summary: train B=2 S=10: ") and "GEMM 75% at 2 TFLOP/s" in line, line


@test
def empty_and_fallback():
    r = K.aggregate([], 3, 100)
    assert r["gpu_ms_per_iter"] == 0.0 and r["categories"] == [] and r["gemm"]["tflops"] is None
    fb = {"per_kernel": False, "why_no_kernels": "torch sees no CUDA device", "wall_ms_per_iter": 3.0,
          "fallback_ms": {"forward (training)": 1.0, "backward": 2.0}, "config": {"train": True, "B": 1, "S": 8}}
    text = K.format_tables(fb)
    assert "no per-kernel data was available (torch sees no CUDA device)" in text and "backward" in text
    assert K.summary_line(fb).endswith("wall 3.00 ms/iter, no per-kernel data")


if __name__ == "__main__":
    sys.exit(test.main())
