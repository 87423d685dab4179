// swiglu_gemm's two kernels (src/cuda/swiglu_gemm.cpp: the hand-written sm_90a one and the embedded
// Triton cubins) on a real device, each against today's path: gemm (cuBLASLt) for gate and up, then
// swiglu_forward (src/cuda/kernels/swiglu.cu).
//   - gate and up within one bf16 ulp of cuBLASLt's per element (another summation order moves a
//     rounding by at most that), ||diff|| / ||ref|| < 1e-2; on the small shapes also against a
//     float64 host product with the same rounding points;
//   - act bit for bit swiglu_forward of the kernel's own gate and up (the epilogue is its arithmetic);
//   - the inference launch's act bit for bit the training launch's; nothing written past [N, F];
//   - gate and up written as the halves of [N, 2F] rows (ld_gu = 2F, the block's layout): the same bits;
//   - shapes and pointers the launcher must refuse are refused with a status.
// Without a device it prints "skipped: no device" and exits 0.
//
//   swiglu_gemm_cuda [--bench]   --bench adds each kernel against the block's path (one cuBLASLt GEMM of
//                                [W_gate; W_up] + swiglu_forward), D 2048, F 8192
//   swiglu_gemm_cuda --profile   only the block's path and the sm_90a kernel (pairs, single CTAs) at
//                                N 16384, twice each, for ncu (no checks)
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

struct Outputs {
    DeviceBuffer act, gate, up;  // [N, F] + kPad each, the tail filled with kSentinel
    Outputs(Device& d, int64_t n)
        : act(sentinel_buffer(d, n, 2)), gate(sentinel_buffer(d, n, 2)), up(sentinel_buffer(d, n, 2)) {}
};

// |a - b| <= one bf16 ulp of the larger (8 significant bits: 2^-7 |x| >= ulp(x)) plus 2^-16 of the
// tensor's largest value (sums that cancel to near 0 are where the two orders differ most relatively).
void compare_lt(const char* what, const std::vector<uint16_t>& got, const std::vector<uint16_t>& ref, int64_t N,
                int64_t D, int64_t F) {
    double maxref = 0, num = 0, den = 0;
    for (uint16_t r : ref) maxref = std::max(maxref, std::fabs(static_cast<double>(bf(r))));
    int64_t bad = 0, differ = 0, first = -1;
    for (std::size_t i = 0; i < ref.size(); ++i) {
        const double a = bf(got[i]), b = bf(ref[i]);
        num += (a - b) * (a - b);
        den += b * b;
        differ += got[i] != ref[i];
        if (!(std::fabs(a - b) <= std::ldexp(std::max(std::fabs(a), std::fabs(b)), -7) + std::ldexp(maxref, -16))) {
            if (first < 0) first = static_cast<int64_t>(i);
            ++bad;
        }
    }
    const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
    std::printf("  %-5s N=%lld D=%lld F=%lld: %.2f%% differ from cuBLASLt's, rel %.1e\n", what,
                static_cast<long long>(N), static_cast<long long>(D), static_cast<long long>(F),
                ref.empty() ? 0.0 : 100.0 * differ / ref.size(), rel);
    EXPECT(bad == 0, "%s: %lld elements more than one ulp from cuBLASLt's, first at %lld: %g vs %g", what,
           static_cast<long long>(bad), static_cast<long long>(first), first < 0 ? 0.0 : bf(got[first]),
           first < 0 ? 0.0 : bf(ref[first]));
    EXPECT(rel < 1e-2, "%s: relative difference %g", what, rel);
}

// Small shapes: gate and up within one ulp of the float64 product (+1e-4 for float32 sums near 0;
// the values are ~N(0, 1)).
void compare_f64(const std::vector<uint16_t>& c, const std::vector<uint16_t>& wg, const std::vector<uint16_t>& wu,
                 const std::vector<uint16_t>& gate, const std::vector<uint16_t>& up, int64_t N, int64_t D, int64_t F) {
    int64_t bad = 0;
    for (int64_t n = 0; n < N; ++n)
        for (int64_t f = 0; f < F; ++f) {
            double sg = 0, su = 0;
            for (int64_t k = 0; k < D; ++k) {
                sg += static_cast<double>(bf(c[n * D + k])) * bf(wg[f * D + k]);
                su += static_cast<double>(bf(c[n * D + k])) * bf(wu[f * D + k]);
            }
            for (auto [got, want] : {std::pair<uint16_t, double>{gate[n * F + f], sg}, {up[n * F + f], su}})
                bad += !(std::fabs(bf(got) - want) <= std::ldexp(std::fabs(want), -7) + 1e-4);
        }
    EXPECT(bad == 0, "N=%lld D=%lld F=%lld: %lld gate/up elements more than one ulp from the float64 product",
           static_cast<long long>(N), static_cast<long long>(D), static_cast<long long>(F),
           static_cast<long long>(bad));
}

const char* name(SwigluGemmKernel k) { return k == SwigluGemmKernel::kWgmma ? "wgmma" : "triton"; }

void test_shape(Device& d, SwigluGemmKernel kern, std::mt19937& rng, int64_t N, int64_t D, int64_t F) {
    std::vector<DeviceBuffer> keep;
    const auto c = random_bf16(rng, static_cast<std::size_t>(N * D));
    const auto wg = random_bf16(rng, static_cast<std::size_t>(F * D), 1.0f / std::sqrt(static_cast<float>(D)));
    const auto wu = random_bf16(rng, static_cast<std::size_t>(F * D), 1.0f / std::sqrt(static_cast<float>(D)));
    const bf16* dc = reinterpret_cast<const bf16*>(upload(d, c, keep));
    const bf16* dwg = reinterpret_cast<const bf16*>(upload(d, wg, keep));
    const bf16* dwu = reinterpret_cast<const bf16*>(upload(d, wu, keep));
    const int64_t NF = N * F;

    Outputs ref(d, NF), train(d, NF), infer(d, NF);
    gemm(d, false, true, N, F, D, 1.0f, dc, D, dwg, D, 0.0f, ref.gate.data(), DType::BF16, F);
    gemm(d, false, true, N, F, D, 1.0f, dc, D, dwu, D, 0.0f, ref.up.data(), DType::BF16, F);
    swiglu_forward(d, ref.gate.as<bf16>(), ref.up.as<bf16>(), N, F, F, ref.act.as<bf16>());
    std::printf(" %s:\n", name(kern));
    swiglu_gemm(d, N, D, F, dc, dwg, dwu, train.act.as<bf16>(), train.gate.as<bf16>(), train.up.as<bf16>(), 0, kern);
    swiglu_gemm(d, N, D, F, dc, dwg, dwu, infer.act.as<bf16>(), nullptr, nullptr, 0, kern);
    // swiglu_forward of the fused kernel's own gate and up, into ref.act (cuBLASLt's act is not compared:
    // a gate one ulp off moves act by more than an ulp, and gate/up are judged above)
    swiglu_forward(d, train.gate.as<bf16>(), train.up.as<bf16>(), N, F, F, ref.act.as<bf16>());

    const auto n = static_cast<std::size_t>(NF);
    const auto g = download<uint16_t>(train.gate.data(), n), u = download<uint16_t>(train.up.data(), n);
    compare_lt("gate", g, download<uint16_t>(ref.gate.data(), n), N, D, F);
    compare_lt("up", u, download<uint16_t>(ref.up.data(), n), N, D, F);
    if (N * D * F <= (int64_t(1) << 24)) compare_f64(c, wg, wu, g, u, N, D, F);
    const auto a = download<uint16_t>(train.act.data(), n);
    const auto want = download<uint16_t>(ref.act.data(), n);
    int64_t diff = 0;
    for (std::size_t i = 0; i < n; ++i) diff += a[i] != want[i];
    EXPECT(diff == 0, "N=%lld D=%lld F=%lld: act differs from swiglu_forward(own gate, up) at %lld elements",
           static_cast<long long>(N), static_cast<long long>(D), static_cast<long long>(F),
           static_cast<long long>(diff));
    EXPECT(download<uint16_t>(infer.act.data(), n) == a, "N=%lld: inference act differs from training act",
           static_cast<long long>(N));
    for (const DeviceBuffer* b : {&train.act, &train.gate, &train.up, &infer.act})
        EXPECT(tail_intact(*b, NF, 2), "N=%lld D=%lld F=%lld: written past [N, F]", static_cast<long long>(N),
               static_cast<long long>(D), static_cast<long long>(F));
    if (kern != SwigluGemmKernel::kWgmma) return;
    // The block's layout: gate | up as the two halves of each [2F] row (ld_gu = 2F).
    Outputs gu(d, 2 * NF);
    swiglu_gemm(d, N, D, F, dc, dwg, dwu, gu.act.as<bf16>(), gu.gate.as<bf16>(), gu.gate.as<bf16>() + F, 2 * F, kern);
    const auto both = download<uint16_t>(gu.gate.data(), 2 * n);
    int64_t moved = 0;
    for (int64_t r = 0; r < N; ++r)
        for (int64_t f = 0; f < F; ++f)
            moved += both[r * 2 * F + f] != g[r * F + f] || both[r * 2 * F + F + f] != u[r * F + f];
    EXPECT(moved == 0, "N=%lld D=%lld F=%lld: gate|up rows of 2F differ from [N, F] gate, up at %lld elements",
           static_cast<long long>(N), static_cast<long long>(D), static_cast<long long>(F),
           static_cast<long long>(moved));
    EXPECT(download<uint16_t>(gu.act.data(), n) == a, "N=%lld: act with ld_gu = 2F differs", static_cast<long long>(N));
    EXPECT(tail_intact(gu.gate, 2 * NF, 2), "N=%lld: gate|up written past [N, 2F]", static_cast<long long>(N));
}

void expect_refused(Device& d, hspmn_status want, const char* what, int64_t N, int64_t D, int64_t F, int offset,
                    bool gate_only, int64_t ld_gu = 0) {
    DeviceBuffer buf(d, 1 << 20);
    bf16* p = buf.as<bf16>();
    try {
        swiglu_gemm(d, N, D, F, p + offset, p, p, p, gate_only || ld_gu ? p : nullptr,
                    ld_gu ? p : nullptr, ld_gu);
        EXPECT(false, "%s: accepted", what);
    } catch (const Error& e) {
        EXPECT(e.status == want, "%s: status %d (%s), want %d", what, e.status, e.message.c_str(), want);
    }
}

// The bench's operands at D = 2048, F = 8192: c and the weights random (zeros would flatter the tensor
// cores' power draw and so the clock), gate | up and act to write.
struct BenchOperands {
    static constexpr int64_t D = 2048, F = 8192;
    int64_t N;
    DeviceBuffer c, w, gu, a;
    BenchOperands(Device& d, int64_t n)
        : N(n), c(d, n * D * 2), w(d, 2 * F * D * 2), gu(d, n * 2 * F * 2), a(d, n * F * 2) {
        std::mt19937 rng(11);
        const auto hw = random_bf16(rng, static_cast<std::size_t>(2 * F * D), 0.02f);
        const auto hc = random_bf16(rng, static_cast<std::size_t>(n * D));
        check(cudaMemcpy(w.data(), hw.data(), hw.size() * 2, cudaMemcpyHostToDevice), "upload");
        check(cudaMemcpy(c.data(), hc.data(), hc.size() * 2, cudaMemcpyHostToDevice), "upload");
    }
    // The block's unfused path: one cuBLASLt GEMM on [W_gate; W_up], then swiglu_forward (optional).
    void unfused(Device& d, bool activation) {
        bf16* pgu = gu.as<bf16>();
        gemm(d, false, true, N, 2 * F, D, 1.0f, c.as<bf16>(), D, w.as<bf16>(), D, 0.0f, pgu, DType::BF16, 2 * F);
        if (activation) swiglu_forward(d, pgu, pgu + F, N, F, 2 * F, a.as<bf16>());
    }
    // The fused kernel k; training also writes gate and up: for the sm_90a kernel as the block's rows of
    // gate | up (2F apart), for Triton's as two [N, F] matrices (its rows are F apart), in the same buffer.
    void fused(Device& d, SwigluGemmKernel k, bool training) {
        const bf16 *pwg = w.as<bf16>(), *pwu = pwg + F * D;
        bf16* pgu = gu.as<bf16>();
        const bool rows = k == SwigluGemmKernel::kWgmma;
        swiglu_gemm(d, N, D, F, c.as<bf16>(), pwg, pwu, a.as<bf16>(), training ? pgu : nullptr,
                    training ? pgu + (rows ? F : N * F) : nullptr, training ? (rows ? 2 * F : F) : 0, k);
    }
};

void bench(Device& d) {
    const bool wgmma = swiglu_gemm_available(d, SwigluGemmKernel::kWgmma);
    const bool triton = swiglu_gemm_available(d, SwigluGemmKernel::kTriton);
    for (int64_t N : {int64_t(16384), int64_t(65536), int64_t(262144)}) {
        BenchOperands op(d, N);
        const int64_t D = BenchOperands::D, F = BenchOperands::F;
        const double flop = 4.0 * N * D * F;
        auto rate = [&](float ms) { return flop / ms / 1e9; };
        const float lt = time_ms(d, 10, [&] { op.unfused(d, true); });
        const float gemm_only = time_ms(d, 10, [&] { op.unfused(d, false); });
        std::printf("bench N=%lld D=%lld F=%lld: cuBLASLt [gate|up] + swiglu %.3f ms (%.0f TFLOP/s; the GEMM alone "
                    "%.3f ms, %.0f)\n", static_cast<long long>(N), static_cast<long long>(D),
                    static_cast<long long>(F), lt, rate(lt), gemm_only, rate(gemm_only));
        for (const char* cluster : {"2", "1", ""}) {
            const SwigluGemmKernel k = *cluster ? SwigluGemmKernel::kWgmma : SwigluGemmKernel::kTriton;
            if (!(k == SwigluGemmKernel::kWgmma ? wgmma : triton)) continue;
            setenv("HSPMN_SWIGLU_GEMM_CLUSTER", cluster, 1);
            const float tr = time_ms(d, 10, [&] { op.fused(d, k, true); });
            const float in = time_ms(d, 10, [&] { op.fused(d, k, false); });
            std::printf("bench N=%lld %s%s%s: fused train %.3f ms (%.0f, %.3fx), fused infer %.3f ms (%.0f, %.3fx)\n",
                        static_cast<long long>(N), name(k), *cluster ? " cluster " : "", cluster, tr, rate(tr),
                        lt / tr, in, rate(in), lt / in);
        }
        unsetenv("HSPMN_SWIGLU_GEMM_CLUSTER");
    }
}

// For a profiler (ncu): the block's path and the sm_90a kernel at the bench's first shape, twice each,
// no timing loop around them.
void profile(Device& d) {
    BenchOperands op(d, 16384);
    for (int i = 0; i < 2; ++i) {
        op.unfused(d, true);
        for (const char* cluster : {"2", "1"}) {
            setenv("HSPMN_SWIGLU_GEMM_CLUSTER", cluster, 1);
            op.fused(d, SwigluGemmKernel::kWgmma, false);
        }
        unsetenv("HSPMN_SWIGLU_GEMM_CLUSTER");
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
        if (!swiglu_gemm_available(d)) {
            std::printf("skipped: no swiglu_gemm kernel for sm_%d in this build (it needs sm_90+)\n", d.arch);
            return;
        }
        if (do_profile) {
            if (swiglu_gemm_available(d, SwigluGemmKernel::kWgmma)) profile(d);
            return;
        }
        // The wgmma kernel twice: CTA pairs sharing W tiles (the default), then one CTA a tile.
        for (const char* cluster : {"2", "1", ""}) {
            const SwigluGemmKernel k = *cluster ? SwigluGemmKernel::kWgmma : SwigluGemmKernel::kTriton;
            if (!swiglu_gemm_available(d, k)) {
                std::printf("%s: not in this build for sm_%d\n", name(k), d.arch);
                continue;
            }
            setenv("HSPMN_SWIGLU_GEMM_CLUSTER", cluster, 1);
            std::printf("%s%s%s\n", name(k), *cluster ? ", cluster " : "", cluster);
            std::mt19937 rng(7);
            test_shape(d, k, rng, 1, 8, 8);
            test_shape(d, k, rng, 37, 40, 24);
            test_shape(d, k, rng, 333, 136, 200);
            test_shape(d, k, rng, 0, 64, 64);
            test_shape(d, k, rng, 129, 72, 136);
            test_shape(d, k, rng, 4099, 2048, 5632);
            test_shape(d, k, rng, 9001, 136, 1032);  // several tiles a CTA, fewer k-blocks than epilogue pieces
        }
        unsetenv("HSPMN_SWIGLU_GEMM_CLUSTER");
        expect_refused(d, HSPMN_ERR_SHAPE, "D not a multiple of 8", 16, 12, 16, 0, false);
        expect_refused(d, HSPMN_ERR_SHAPE, "F not a multiple of 8", 16, 16, 20, 0, false);
        expect_refused(d, HSPMN_ERR_SHAPE, "negative N", -1, 16, 16, 0, false);
        expect_refused(d, HSPMN_ERR_INVALID_ARGUMENT, "c not 16-byte aligned", 16, 16, 16, 1, false);
        expect_refused(d, HSPMN_ERR_INVALID_ARGUMENT, "gate without up", 16, 16, 16, 0, true);
        if (swiglu_gemm_available(d, SwigluGemmKernel::kWgmma)) {
            setenv("HSPMN_SWIGLU_GEMM_CLUSTER", "3", 1);
            expect_refused(d, HSPMN_ERR_INVALID_ARGUMENT, "HSPMN_SWIGLU_GEMM_CLUSTER=3", 16, 16, 16, 0, false);
            unsetenv("HSPMN_SWIGLU_GEMM_CLUSTER");
        }
        expect_refused(d, HSPMN_ERR_SHAPE, "gate/up stride below F", 16, 16, 16, 0, false, 8);
        expect_refused(d, HSPMN_ERR_SHAPE, "gate/up stride not a multiple of 8", 16, 16, 16, 0, false, 20);
        if (do_bench) bench(d);
    });
}
