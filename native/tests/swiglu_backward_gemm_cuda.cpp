// swiglu_backward_gemm (src/cuda/swiglu_gemm.cpp: the sm_90a kernel's backward launch) on a real device,
// against the block's unfused path: gemm (cuBLASLt) into d_act, then swiglu_backward
// (src/cuda/kernels/swiglu.cu), with W_down^T from transpose_bf16 (checked bit for bit first).
//   - d_gate and d_up within two bf16 ulps of the unfused path's per element (d_act from another
//     summation order may sit one ulp away, and both outputs are linear in it), ||diff|| / ||ref|| < 1e-2,
//     the share of differing elements printed (0 % when the kernel sums in cuBLASLt's order);
//   - with alpha 1 and 1 / (1 - 0.1) (the block's dropout scale);
//   - rows of ld = F + 16: nothing written in a row's last 16 columns, nor past the last row;
//   - CTA pairs (the default) and single CTAs; shapes and pointers the launcher must refuse are refused.
// Without a device (or without the sm_90a kernel) it prints "skipped" and exits 0.
//
//   swiglu_backward_gemm_cuda [--bench]   --bench adds the fused kernel (and the transpose) against the
//                                         unfused path, D 2048, F 8192, N 16k, 64k and 256k
//   swiglu_backward_gemm_cuda --profile   both paths at N 16384, twice each, for ncu (no checks)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "../src/core/bf16.h"
#include "../src/core/error.h"
#include "../src/cuda/device.h"
#include "../src/cuda/kernels/kernels.h"
#include "../src/cuda/runtime.h"
#include "cuda_check.h"
#include "cuda_timing.h"

using namespace hspmn;
using namespace hspmn::cuda;

using bf16 = __nv_bfloat16;

namespace {

float bf(uint16_t h) { return bf16_to_f32(h); }

// got against ref over the first F columns of N rows of ld: within 2^-6 of the larger (two ulps) plus
// 2^-16 of the largest reference value; the columns past F must still hold kSentinel.
void compare(const char* what, const std::vector<uint16_t>& got, const std::vector<uint16_t>& ref, int64_t N,
             int64_t D, int64_t F, int64_t ld) {
    double maxref = 0, num = 0, den = 0;
    for (int64_t r = 0; r < N; ++r)
        for (int64_t f = 0; f < F; ++f) maxref = std::max(maxref, std::fabs(static_cast<double>(bf(ref[r * ld + f]))));
    int64_t bad = 0, differ = 0, first = -1, gap = 0;
    for (int64_t r = 0; r < N; ++r) {
        for (int64_t f = 0; f < F; ++f) {
            const int64_t i = r * ld + f;
            const double a = bf(got[i]), b = bf(ref[i]);
            num += (a - b) * (a - b);
            den += b * b;
            differ += got[i] != ref[i];
            if (!(std::fabs(a - b) <= std::ldexp(std::max(std::fabs(a), std::fabs(b)), -6) + std::ldexp(maxref, -16))) {
                if (first < 0) first = i;
                ++bad;
            }
        }
        for (int64_t f = F; f < ld; ++f) gap += got[r * ld + f] != kSentinel;
    }
    const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    std::printf("  %-6s N=%lld D=%lld F=%lld: %.2f%% differ from the unfused path's, rel %.1e\n", what,
                static_cast<long long>(N), static_cast<long long>(D), static_cast<long long>(F),
                N * F > 0 ? 100.0 * differ / (N * F) : 0.0, rel);
    EXPECT(bad == 0, "%s: %lld elements more than two ulps from the unfused path's, first at %lld: %g vs %g", what,
           static_cast<long long>(bad), static_cast<long long>(first), first < 0 ? 0.0 : bf(got[first]),
           first < 0 ? 0.0 : bf(ref[first]));
    EXPECT(rel < 1e-2, "%s: relative difference %g", what, rel);
    EXPECT(gap == 0, "%s: %lld elements written in the columns [F, ld) of a row", what, static_cast<long long>(gap));
}

void test_shape(Device& d, std::mt19937& rng, int64_t N, int64_t D, int64_t F, float alpha) {
    std::vector<DeviceBuffer> keep;
    const int64_t ld = F + 16;
    const auto dm = random_bf16(rng, static_cast<std::size_t>(N * D), 0.1f);
    const auto wd = random_bf16(rng, static_cast<std::size_t>(D * F), 1.0f / std::sqrt(static_cast<float>(D)));
    const auto gu = random_bf16(rng, static_cast<std::size_t>(N * ld * 2), 2.0f);  // g rows, then u rows
    const bf16* ddm = reinterpret_cast<const bf16*>(upload(d, dm, keep));
    const bf16* dwd = reinterpret_cast<const bf16*>(upload(d, wd, keep));
    const bf16* dg_in = reinterpret_cast<const bf16*>(upload(d, gu, keep));
    const bf16* du_in = dg_in + N * ld;
    const int64_t n = N * ld;

    // W_down^T, exactly.
    DeviceBuffer wt(d, std::max<int64_t>(F * D * 2, 16));
    transpose_bf16(d, dwd, D, F, wt.as<bf16>());
    const auto t = download<uint16_t>(wt.data(), static_cast<std::size_t>(F * D));
    int64_t moved = 0;
    for (int64_t r = 0; r < D; ++r)
        for (int64_t c = 0; c < F; ++c) moved += t[c * D + r] != wd[r * F + c];
    EXPECT(moved == 0, "transpose_bf16 %lld x %lld: %lld elements out of place", static_cast<long long>(D),
           static_cast<long long>(F), static_cast<long long>(moved));

    // The unfused path, as the block runs it.
    DeviceBuffer d_act(d, std::max<int64_t>(N * F * 2, 16));
    DeviceBuffer ref_g = sentinel_buffer(d, n, 2), ref_u = sentinel_buffer(d, n, 2);
    gemm(d, false, false, N, F, D, alpha, ddm, D, dwd, F, 0.0f, d_act.data(), DType::BF16, F);
    swiglu_backward(d, dg_in, du_in, d_act.as<bf16>(), N, F, ld, ref_g.as<bf16>(), ref_u.as<bf16>());

    DeviceBuffer got_g = sentinel_buffer(d, n, 2), got_u = sentinel_buffer(d, n, 2);
    swiglu_backward_gemm(d, N, D, F, ddm, wt.as<bf16>(), alpha, dg_in, du_in, got_g.as<bf16>(), got_u.as<bf16>(), ld);
    const auto sz = static_cast<std::size_t>(n);
    compare("d_gate", download<uint16_t>(got_g.data(), sz), download<uint16_t>(ref_g.data(), sz), N, D, F, ld);
    compare("d_up", download<uint16_t>(got_u.data(), sz), download<uint16_t>(ref_u.data(), sz), N, D, F, ld);
    for (const DeviceBuffer* b : {&got_g, &got_u})
        EXPECT(tail_intact(*b, n, 2), "N=%lld D=%lld F=%lld: written past the last row", static_cast<long long>(N),
               static_cast<long long>(D), static_cast<long long>(F));
}

void expect_refused(Device& d, hspmn_status want, const char* what, int64_t N, int64_t D, int64_t F, int64_t ld,
                    int offset = 0, float alpha = 1.0f, bool null_g = false) {
    DeviceBuffer buf(d, 1 << 20);
    bf16* p = buf.as<bf16>();
    try {
        swiglu_backward_gemm(d, N, D, F, p + offset, p, alpha, null_g ? nullptr : p, p, p, p, ld);
        EXPECT(false, "%s: accepted", what);
    } catch (const Error& e) {
        EXPECT(e.status == want, "%s: status %d (%s), want %d", what, e.status, e.message.c_str(), want);
    }
}

// The bench's operands at D = 2048, F = 8192, random (zeros would flatter the tensor cores' power draw),
// gate | up as the block keeps them ([N, 2F] rows) and d_gate | d_up likewise.
struct BenchOperands {
    static constexpr int64_t D = 2048, F = 8192;
    int64_t N;
    DeviceBuffer dm, w, wt, gu, dgu, act;
    BenchOperands(Device& d, int64_t n)
        : N(n), dm(d, n * D * 2), w(d, F * D * 2), wt(d, F * D * 2), gu(d, n * 2 * F * 2), dgu(d, n * 2 * F * 2),
          act(d, n * F * 2) {
        std::mt19937 rng(11);
        const auto hw = random_bf16(rng, static_cast<std::size_t>(F * D), 0.02f);
        const auto hdm = random_bf16(rng, static_cast<std::size_t>(n * D), 0.1f);
        const auto hgu = random_bf16(rng, static_cast<std::size_t>(n * 2 * F));
        check(cudaMemcpy(w.data(), hw.data(), hw.size() * 2, cudaMemcpyHostToDevice), "upload");
        check(cudaMemcpy(dm.data(), hdm.data(), hdm.size() * 2, cudaMemcpyHostToDevice), "upload");
        check(cudaMemcpy(gu.data(), hgu.data(), hgu.size() * 2, cudaMemcpyHostToDevice), "upload");
    }
    void unfused(Device& d, bool activation) {
        gemm(d, false, false, N, F, D, 1.0f, dm.as<bf16>(), D, w.as<bf16>(), F, 0.0f, act.data(), DType::BF16, F);
        const bf16* g = gu.as<bf16>();
        if (activation) swiglu_backward(d, g, g + F, act.as<bf16>(), N, F, 2 * F, dgu.as<bf16>(), dgu.as<bf16>() + F);
    }
    void transpose(Device& d) { transpose_bf16(d, w.as<bf16>(), D, F, wt.as<bf16>()); }
    void fused(Device& d) {
        const bf16* g = gu.as<bf16>();
        swiglu_backward_gemm(d, N, D, F, dm.as<bf16>(), wt.as<bf16>(), 1.0f, g, g + F, dgu.as<bf16>(),
                             dgu.as<bf16>() + F, 2 * F);
    }
};

void bench(Device& d) {
    for (int64_t N : {int64_t(16384), int64_t(65536), int64_t(262144)}) {
        BenchOperands op(d, N);
        const int64_t D = BenchOperands::D, F = BenchOperands::F;
        const double flop = 2.0 * N * D * F;
        auto rate = [&](float ms) { return flop / ms / 1e9; };
        const float lt = time_ms(d, 10, [&] { op.unfused(d, true); });
        const float gemm_only = time_ms(d, 10, [&] { op.unfused(d, false); });
        const float tr = time_ms(d, 10, [&] { op.transpose(d); });
        std::printf("bench N=%lld D=%lld F=%lld: cuBLASLt d_act + swiglu_backward %.3f ms (%.0f TFLOP/s; the GEMM "
                    "alone %.3f ms, %.0f); transpose %.3f ms\n", static_cast<long long>(N), static_cast<long long>(D),
                    static_cast<long long>(F), lt, rate(lt), gemm_only, rate(gemm_only), tr);
        for (const char* cluster : {"2", "1"}) {
            setenv("HSPMN_SWIGLU_GEMM_CLUSTER", cluster, 1);
            const float fu = time_ms(d, 10, [&] { op.fused(d); });
            std::printf("bench N=%lld fused cluster %s: %.3f ms (%.0f TFLOP/s, %.3fx; with the transpose %.3fx)\n",
                        static_cast<long long>(N), cluster, fu, rate(fu), lt / fu, lt / (fu + tr));
        }
        unsetenv("HSPMN_SWIGLU_GEMM_CLUSTER");
    }
}

void profile(Device& d) {
    BenchOperands op(d, 16384);
    op.transpose(d);
    for (int i = 0; i < 2; ++i) {
        op.unfused(d, true);
        op.fused(d);
    }
    check(cudaDeviceSynchronize(), "profile");
    std::printf("profile: done\n");
}

}  // namespace

int main(int argc, char** argv) {
    const bool do_bench = argc > 1 && std::strcmp(argv[1], "--bench") == 0;
    const bool do_profile = argc > 1 && std::strcmp(argv[1], "--profile") == 0;
    return run_on_device([&](Device& d) {
        d.activate();
        if (!swiglu_gemm_available(d, SwigluGemmKernel::kWgmma)) {
            std::printf("skipped: no sm_90a kernel for sm_%d in this build\n", d.arch);
            return;
        }
        if (do_profile) return profile(d);
        for (const char* cluster : {"2", "1"}) {
            setenv("HSPMN_SWIGLU_GEMM_CLUSTER", cluster, 1);
            std::printf("cluster %s\n", cluster);
            std::mt19937 rng(7);
            for (float alpha : {1.0f, 1.0f / 0.9f}) {
                test_shape(d, rng, 1, 8, 8, alpha);
                test_shape(d, rng, 37, 40, 24, alpha);
                test_shape(d, rng, 333, 136, 200, alpha);   // one tile's columns: 128 + 72
                test_shape(d, rng, 0, 64, 64, alpha);
                test_shape(d, rng, 129, 72, 264, alpha);    // the second tile's first box only 8 wide
            }
            test_shape(d, rng, 4099, 2048, 5632, 1.0f);     // the block's D, whole tiles of F
            test_shape(d, rng, 9001, 136, 1032, 1.0f / 0.9f);  // several tiles a CTA, few k-blocks
        }
        unsetenv("HSPMN_SWIGLU_GEMM_CLUSTER");
        expect_refused(d, HSPMN_ERR_SHAPE, "D not a multiple of 8", 16, 12, 16, 16);
        expect_refused(d, HSPMN_ERR_SHAPE, "F not a multiple of 8", 16, 16, 20, 24);
        expect_refused(d, HSPMN_ERR_SHAPE, "negative N", -1, 16, 16, 16);
        expect_refused(d, HSPMN_ERR_SHAPE, "row stride below F", 16, 16, 16, 8);
        expect_refused(d, HSPMN_ERR_SHAPE, "row stride not a multiple of 8", 16, 16, 16, 20);
        expect_refused(d, HSPMN_ERR_INVALID_ARGUMENT, "dm not 16-byte aligned", 16, 16, 16, 16, 1);
        expect_refused(d, HSPMN_ERR_INVALID_ARGUMENT, "alpha NaN", 16, 16, 16, 16, 0, NAN);
        expect_refused(d, HSPMN_ERR_INVALID_ARGUMENT, "g null", 16, 16, 16, 16, 0, 1.0f, true);
        setenv("HSPMN_SWIGLU_GEMM_CLUSTER", "3", 1);
        expect_refused(d, HSPMN_ERR_INVALID_ARGUMENT, "HSPMN_SWIGLU_GEMM_CLUSTER=3", 16, 16, 16, 16);
        unsetenv("HSPMN_SWIGLU_GEMM_CLUSTER");
        if (do_bench) bench(d);
    });
}
