// down_residual (src/cuda/down_residual.cpp, the sm_90a kernel) and residual_out_selected on a real
// device, against the block's unfused path: gemm (cuBLASLt) into f32 m, row_slots, residual_out.
//   - out of the rows without a query slot, and out of every row after residual_out_selected, within one
//     bf16 ulp of residual_out's (the same bits where the kernel sums in cuBLASLt's order: the share of
//     elements that differ is printed);
//   - res_sel (m + x in f32) within 2^-16 relative of cuBLASLt's m + x; the query rows' out untouched
//     until residual_out_selected; nothing written past [N, D] or [Q, D];
//   - row_slot null: every row's out written;
//   - out = x (in place): the same bits as into a separate out;
//   - shapes and pointers the launcher must refuse are refused with a status.
// Without a device, or on a GPU other than sm_90, it prints "skipped" and exits 0.
//
//   down_residual_cuda [--bench]   --bench adds the kernel against the block's path at D 2048, F 8192
//   down_residual_cuda --profile   only the block's path and the kernel at N 65536, twice each, for ncu
//   down_residual_cuda --sweep     only the kernel's timings under each tile-walk group and L2 hint setting
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
const bf16* as_bf16(const uint16_t* p) { return reinterpret_cast<const bf16*>(p); }

// got against want, element by element: how many differ in their bits, how many by more than one bf16
// ulp of the larger (8 significant bits: 2^-7 |x| >= ulp(x)), and the first of those. Equal bits always
// pass (the sentinel tails are NaN patterns).
struct UlpCount {
    int64_t differ = 0, beyond = 0, first = -1;
};
UlpCount ulp_compare(const std::vector<uint16_t>& got, const std::vector<uint16_t>& want) {
    UlpCount c;
    for (std::size_t i = 0; i < want.size(); ++i) {
        if (got[i] == want[i]) continue;
        ++c.differ;
        const double a = bf(got[i]), b = bf(want[i]);
        if (!(std::fabs(a - b) <= std::ldexp(std::max(std::fabs(a), std::fabs(b)), -7))) {
            if (c.first < 0) c.first = static_cast<int64_t>(i);
            ++c.beyond;
        }
    }
    return c;
}

// The query rows of a test: every `every`-th row from `first`, as the block's lists with B = 1
// (indices [1, C] increasing, counts [1] = C).
struct Queries {
    std::vector<int32_t> rows;
    int32_t count() const { return static_cast<int32_t>(rows.size()); }
};

Queries queries(int64_t N, int every, int first) {
    Queries q;
    for (int64_t r = first; every > 0 && r < N; r += every) q.rows.push_back(static_cast<int32_t>(r));
    return q;
}

void test_shape(Device& d, std::mt19937& rng, int64_t N, int64_t D, int64_t F, int every) {
    std::vector<DeviceBuffer> keep;
    const auto act = random_bf16(rng, static_cast<std::size_t>(N * F));
    const auto w = random_bf16(rng, static_cast<std::size_t>(D * F), 1.0f / std::sqrt(static_cast<float>(F)));
    const auto x = random_bf16(rng, static_cast<std::size_t>(N * D));
    const Queries q = queries(N, every, 1);
    const int64_t Q = q.count(), ND = N * D;
    const auto o = random_f32(rng, static_cast<std::size_t>(std::max<int64_t>(Q, 1) * D));
    const bf16* da = reinterpret_cast<const bf16*>(upload(d, act, keep));
    const bf16* dw = reinterpret_cast<const bf16*>(upload(d, w, keep));
    const bf16* dx = reinterpret_cast<const bf16*>(upload(d, x, keep));
    const float* dout_o = upload(d, o, keep);
    const std::vector<int32_t> counts = {static_cast<int32_t>(Q)};
    const int32_t* dq = upload(d, q.rows.empty() ? std::vector<int32_t>{0} : q.rows, keep);
    const int32_t* dc = upload(d, counts, keep);
    DeviceBuffer slot(d, static_cast<std::size_t>(std::max<int64_t>(N, 1)) * 4);
    row_slots(d, dq, dc, 1, N, Q, N, slot.as<int32_t>());

    // The block's path: m = act W^T in f32, then residual_out.
    DeviceBuffer m(d, static_cast<std::size_t>(std::max<int64_t>(ND, 1)) * 4);
    DeviceBuffer ref = sentinel_buffer(d, ND, 2);
    gemm(d, false, true, N, D, F, 1.0f, da, F, dw, F, 0.0f, m.data(), DType::F32, D);
    residual_out(d, m.as<float>(), dx, dout_o, Q > 0 ? slot.as<int32_t>() : nullptr, N, D, ref.as<bf16>());

    DeviceBuffer out = sentinel_buffer(d, ND, 2), res = sentinel_buffer(d, Q * D, 4);
    down_residual(d, N, D, F, da, dw, dx, Q > 0 ? slot.as<int32_t>() : nullptr, out.as<bf16>(),
                  Q > 0 ? res.as<float>() : nullptr);
    const auto n = static_cast<std::size_t>(ND);
    const auto got_kernel = download<uint16_t>(out.data(), n);
    const auto hm = download<float>(m.data(), n);
    // res_sel against cuBLASLt's m + x; the query rows' out not yet written.
    const auto got_res = download<float>(res.data(), static_cast<std::size_t>(Q * D));
    int64_t res_bad = 0, res_differ = 0, touched = 0;
    for (int64_t s = 0; s < Q; ++s)
        for (int64_t c = 0; c < D; ++c) {
            const int64_t row = q.rows[s];
            const float want = hm[row * D + c] + bf(x[row * D + c]);
            const float g = got_res[s * D + c];
            res_differ += std::memcmp(&g, &want, 4) != 0;
            res_bad += !(std::fabs(g - want) <= std::ldexp(std::fabs(want), -16) + 1e-6f);
            touched += got_kernel[row * D + c] != kSentinel;
        }
    EXPECT(res_bad == 0, "N=%lld D=%lld F=%lld: %lld res_sel elements off cuBLASLt's m + x",
           static_cast<long long>(N), static_cast<long long>(D), static_cast<long long>(F),
           static_cast<long long>(res_bad));
    EXPECT(touched == 0, "N=%lld: %lld query-row out elements written by down_residual", static_cast<long long>(N),
           static_cast<long long>(touched));
    EXPECT(tail_intact(res, Q * D, 4), "N=%lld D=%lld: res_sel written past [Q, D]", static_cast<long long>(N),
           static_cast<long long>(D));

    if (Q > 0)
        residual_out_selected(d, res.as<float>(), dout_o, dq, dc, 1, N, Q, D, out.as<bf16>());
    const auto got = download<uint16_t>(out.data(), n);
    const auto want = download<uint16_t>(ref.data(), n);
    const UlpCount c = ulp_compare(got, want);
    const int64_t bad = c.beyond, differ = c.differ, first = c.first;
    std::printf("  N=%lld D=%lld F=%lld Q=%lld: out %.2f%% differ from residual_out's, res_sel %.2f%% from m + x\n",
                static_cast<long long>(N), static_cast<long long>(D), static_cast<long long>(F),
                static_cast<long long>(Q), n ? 100.0 * differ / n : 0.0,
                Q ? 100.0 * res_differ / (Q * D) : 0.0);
    EXPECT(bad == 0, "N=%lld D=%lld F=%lld: %lld out elements more than one ulp from residual_out's, first at %lld",
           static_cast<long long>(N), static_cast<long long>(D), static_cast<long long>(F),
           static_cast<long long>(bad), static_cast<long long>(first));
    EXPECT(tail_intact(out, ND, 2), "N=%lld D=%lld: out written past [N, D]", static_cast<long long>(N),
           static_cast<long long>(D));

    // In place (out = x): the same bits as the separate out.
    if (N > 0) {
        DeviceBuffer inplace = sentinel_buffer(d, ND, 2);
        check(cudaMemcpy(inplace.data(), dx, n * 2, cudaMemcpyDeviceToDevice), "copy x");
        DeviceBuffer res2 = sentinel_buffer(d, Q * D, 4);
        down_residual(d, N, D, F, da, dw, inplace.as<bf16>(), Q > 0 ? slot.as<int32_t>() : nullptr,
                      inplace.as<bf16>(), Q > 0 ? res2.as<float>() : nullptr);
        if (Q > 0) residual_out_selected(d, res2.as<float>(), dout_o, dq, dc, 1, N, Q, D, inplace.as<bf16>());
        EXPECT(download<uint16_t>(inplace.data(), n) == got, "N=%lld D=%lld: out = x differs from a separate out",
               static_cast<long long>(N), static_cast<long long>(D));
    }
}

// row_slot null: every row is out = bf16(m + x), no res_sel.
void test_no_queries(Device& d, std::mt19937& rng, int64_t N, int64_t D, int64_t F) {
    std::vector<DeviceBuffer> keep;
    const bf16* da = as_bf16(upload(d, random_bf16(rng, static_cast<std::size_t>(N * F)), keep));
    const bf16* dw = as_bf16(upload(d, random_bf16(rng, static_cast<std::size_t>(D * F), 0.1f), keep));
    const bf16* dx = as_bf16(upload(d, random_bf16(rng, static_cast<std::size_t>(N * D)), keep));
    DeviceBuffer m(d, static_cast<std::size_t>(N * D) * 4);
    DeviceBuffer ref = sentinel_buffer(d, N * D, 2), out = sentinel_buffer(d, N * D, 2);
    gemm(d, false, true, N, D, F, 1.0f, da, F, dw, F, 0.0f, m.data(), DType::F32, D);
    residual_out(d, m.as<float>(), dx, nullptr, nullptr, N, D, ref.as<bf16>());
    down_residual(d, N, D, F, da, dw, dx, nullptr, out.as<bf16>(), nullptr);
    const auto n = static_cast<std::size_t>(N * D + kPad);
    const auto got = download<uint16_t>(out.data(), n), want = download<uint16_t>(ref.data(), n);
    const int64_t bad = ulp_compare(got, want).beyond;
    EXPECT(bad == 0, "row_slot null, N=%lld D=%lld F=%lld: %lld elements (tail included) off residual_out's",
           static_cast<long long>(N), static_cast<long long>(D), static_cast<long long>(F),
           static_cast<long long>(bad));
    // x and out 4-byte but not 16-byte aligned (the kernel then prefetches nothing): the same bits.
    DeviceBuffer x4(d, static_cast<std::size_t>(N * D + 8) * 2), out4(d, static_cast<std::size_t>(N * D + 8) * 2);
    check(cudaMemcpy(x4.as<bf16>() + 2, dx, static_cast<std::size_t>(N * D) * 2, cudaMemcpyDeviceToDevice), "copy x");
    down_residual(d, N, D, F, da, dw, x4.as<bf16>() + 2, nullptr, out4.as<bf16>() + 2, nullptr);
    const auto got4 = download<uint16_t>(out4.as<bf16>() + 2, static_cast<std::size_t>(N * D));
    EXPECT(std::equal(got4.begin(), got4.end(), got.begin()), "row_slot null, N=%lld: x and out 4-byte aligned differ",
           static_cast<long long>(N));
}

void expect_refused(Device& d, hspmn_status want, const char* what, int64_t N, int64_t D, int64_t F, int act_offset,
                    int x_offset, bool slot_only) {
    DeviceBuffer buf(d, 1 << 20);
    bf16* p = buf.as<bf16>();
    try {
        down_residual(d, N, D, F, p + act_offset, p, p + x_offset, slot_only ? buf.as<int32_t>() : nullptr, p, nullptr);
        EXPECT(false, "%s: accepted", what);
    } catch (const Error& e) {
        EXPECT(e.status == want, "%s: status %d (%s), want %d", what, e.status, e.message.c_str(), want);
    }
}

// The bench's operands at D = 2048, F = 8192, 20 % query rows (the block's): act, W_down and x random
// (zeros would flatter the tensor cores' power draw and so the clock), m, out and res_sel to write.
struct BenchOperands {
    static constexpr int64_t D = 2048, F = 8192;
    int64_t N, Q;
    std::vector<DeviceBuffer> keep;
    const bf16 *act, *w, *x;
    const int32_t *rows, *counts;
    const float* o;
    DeviceBuffer slot, m, out, res;
    explicit BenchOperands(Device& d, int64_t n) : N(n) {
        std::mt19937 rng(11);
        act = as_bf16(upload(d, random_bf16(rng, static_cast<std::size_t>(N * F)), keep));
        w = as_bf16(upload(d, random_bf16(rng, static_cast<std::size_t>(D * F), 0.02f), keep));
        x = as_bf16(upload(d, random_bf16(rng, static_cast<std::size_t>(N * D)), keep));
        const Queries q = queries(N, 5, 2);
        Q = q.count();
        rows = upload(d, q.rows, keep);
        counts = upload(d, std::vector<int32_t>{static_cast<int32_t>(Q)}, keep);
        o = upload(d, random_f32(rng, static_cast<std::size_t>(Q * D)), keep);
        slot = DeviceBuffer(d, static_cast<std::size_t>(N) * 4);
        m = DeviceBuffer(d, static_cast<std::size_t>(N * D) * 4);
        out = DeviceBuffer(d, static_cast<std::size_t>(N * D) * 2);
        res = DeviceBuffer(d, static_cast<std::size_t>(Q * D) * 4);
        row_slots(d, rows, counts, 1, N, Q, N, slot.as<int32_t>());
    }
    // The block's path: cuBLASLt's f32 m, then (residual) residual_out.
    void unfused(Device& d, bool residual) {
        gemm(d, false, true, N, D, F, 1.0f, act, F, w, F, 0.0f, m.data(), DType::F32, D);
        if (residual) residual_out(d, m.as<float>(), x, o, slot.as<int32_t>(), N, D, out.as<bf16>());
    }
    // The kernel, then (selected) the query rows' residual_out_selected.
    void fused(Device& d, bool selected) {
        down_residual(d, N, D, F, act, w, x, slot.as<int32_t>(), out.as<bf16>(), res.as<float>());
        if (selected) residual_out_selected(d, res.as<float>(), o, rows, counts, 1, N, Q, D, out.as<bf16>());
    }
};

void bench(Device& d) {
    for (int64_t N : {int64_t(16384), int64_t(65536), int64_t(262144)}) {
        BenchOperands op(d, N);
        const double flop = 2.0 * N * BenchOperands::D * BenchOperands::F;
        auto rate = [&](float ms) { return flop / ms / 1e9; };
        const float gemm_only = time_ms(d, 10, [&] { op.unfused(d, false); });
        const float unfused = time_ms(d, 10, [&] { op.unfused(d, true); });
        std::printf("bench N=%lld D=%lld F=%lld: cuBLASLt f32 m + residual_out %.3f ms (the GEMM alone %.3f ms, %.0f "
                    "TFLOP/s)\n", static_cast<long long>(N), static_cast<long long>(BenchOperands::D),
                    static_cast<long long>(BenchOperands::F), unfused, gemm_only, rate(gemm_only));
        for (const char* cluster : {"2", "1"}) {
            setenv("HSPMN_DOWN_RESIDUAL_CLUSTER", cluster, 1);
            const float kernel = time_ms(d, 10, [&] { op.fused(d, false); });
            const float fused = time_ms(d, 10, [&] { op.fused(d, true); });
            std::printf("bench N=%lld cluster %s: down_residual %.3f ms (%.0f), + residual_out_selected %.3f ms "
                        "(%.3fx)\n", static_cast<long long>(N), cluster, kernel, rate(kernel), fused, unfused / fused);
        }
        unsetenv("HSPMN_DOWN_RESIDUAL_CLUSTER");
    }
}

// The kernel (pairs) under each tile-walk group and L2 hint setting (HSPMN_DOWN_RESIDUAL_GROUP, _L2) at
// the block's pass sizes, between two timings of cuBLASLt's GEMM alone (their spread is the noise).
void sweep(Device& d) {
    for (int64_t N : {int64_t(65536), int64_t(131072)}) {
        BenchOperands op(d, N);
        const double flop = 2.0 * N * BenchOperands::D * BenchOperands::F;
        auto rate = [&](float ms) { return flop / ms / 1e9; };
        const float before = time_ms(d, 10, [&] { op.unfused(d, false); });
        std::printf("sweep N=%lld: cuBLASLt GEMM %.3f ms (%.0f TFLOP/s)\n", static_cast<long long>(N), before,
                    rate(before));
        for (const char* l2 : {"0", "1"}) {
            for (const char* group : {"2", "4", "8", "16", "32"}) {
                setenv("HSPMN_DOWN_RESIDUAL_GROUP", group, 1);
                setenv("HSPMN_DOWN_RESIDUAL_L2", l2, 1);
                const float kernel = time_ms(d, 10, [&] { op.fused(d, false); });
                std::printf("sweep N=%lld group %s l2 %s: down_residual %.3f ms (%.0f TFLOP/s, %.3fx the GEMM)\n",
                            static_cast<long long>(N), group, l2, kernel, rate(kernel), before / kernel);
            }
        }
        unsetenv("HSPMN_DOWN_RESIDUAL_GROUP");
        unsetenv("HSPMN_DOWN_RESIDUAL_L2");
        const float after = time_ms(d, 10, [&] { op.unfused(d, false); });
        std::printf("sweep N=%lld: cuBLASLt GEMM again %.3f ms (%.0f TFLOP/s)\n", static_cast<long long>(N), after,
                    rate(after));
    }
}

// For a profiler (ncu): the block's path and the kernel (pairs) at N = 65536, twice each, untimed.
void profile(Device& d) {
    BenchOperands op(d, 65536);
    for (int i = 0; i < 2; ++i) {
        op.unfused(d, true);
        op.fused(d, true);
    }
    check(cudaDeviceSynchronize(), "profile");
    std::printf("profile: done\n");
}

}  // namespace

int main(int argc, char** argv) {
    const bool do_bench = argc > 1 && std::strcmp(argv[1], "--bench") == 0;
    const bool do_profile = argc > 1 && std::strcmp(argv[1], "--profile") == 0;
    const bool do_sweep = argc > 1 && std::strcmp(argv[1], "--sweep") == 0;
    return run_on_device([&](Device& d) {
        d.activate();
        if (!down_residual_available(d)) {
            std::printf("skipped: no down_residual kernel for sm_%d in this build (it needs sm_90)\n", d.arch);
            return;
        }
        if (do_profile) {
            profile(d);
            return;
        }
        if (do_sweep) {
            sweep(d);
            return;
        }
        // Pairs and single CTAs with the default walk, then pairs with groups of 1 and 4 units and the L2
        // hints (another tile order, other copy instructions: the same results).
        struct Setting {
            const char *cluster, *group, *l2;
        };
        for (const Setting& st : {Setting{"2", "16", "0"}, Setting{"1", "16", "0"}, Setting{"2", "1", "1"},
                                  Setting{"2", "4", "1"}}) {
            setenv("HSPMN_DOWN_RESIDUAL_CLUSTER", st.cluster, 1);
            setenv("HSPMN_DOWN_RESIDUAL_GROUP", st.group, 1);
            setenv("HSPMN_DOWN_RESIDUAL_L2", st.l2, 1);
            std::printf("cluster %s group %s l2 %s\n", st.cluster, st.group, st.l2);
            std::mt19937 rng(7);
            test_shape(d, rng, 1, 8, 8, 1);
            test_shape(d, rng, 37, 40, 24, 3);
            test_shape(d, rng, 333, 136, 200, 5);
            test_shape(d, rng, 0, 64, 64, 5);
            test_shape(d, rng, 129, 264, 136, 7);   // a second column tile of 8 columns
            test_shape(d, rng, 300, 512, 72, 0);    // no query rows (Q = 0, row_slot null)
            test_shape(d, rng, 4099, 2048, 5632, 5);
            test_shape(d, rng, 9001, 136, 1032, 4);  // several tiles a CTA
            test_no_queries(d, rng, 515, 256, 264);
        }
        unsetenv("HSPMN_DOWN_RESIDUAL_CLUSTER");
        unsetenv("HSPMN_DOWN_RESIDUAL_GROUP");
        unsetenv("HSPMN_DOWN_RESIDUAL_L2");
        expect_refused(d, HSPMN_ERR_SHAPE, "D not a multiple of 8", 16, 12, 16, 0, 0, false);
        expect_refused(d, HSPMN_ERR_SHAPE, "F not a multiple of 8", 16, 16, 20, 0, 0, false);
        expect_refused(d, HSPMN_ERR_SHAPE, "negative N", -1, 16, 16, 0, 0, false);
        expect_refused(d, HSPMN_ERR_INVALID_ARGUMENT, "act not 16-byte aligned", 16, 16, 16, 1, 0, false);
        expect_refused(d, HSPMN_ERR_INVALID_ARGUMENT, "x not 4-byte aligned", 16, 16, 16, 0, 1, false);
        expect_refused(d, HSPMN_ERR_INVALID_ARGUMENT, "row_slot without res_sel", 16, 16, 16, 0, 0, true);
        setenv("HSPMN_DOWN_RESIDUAL_CLUSTER", "3", 1);
        expect_refused(d, HSPMN_ERR_INVALID_ARGUMENT, "HSPMN_DOWN_RESIDUAL_CLUSTER=3", 16, 16, 16, 0, 0, false);
        unsetenv("HSPMN_DOWN_RESIDUAL_CLUSTER");
        setenv("HSPMN_DOWN_RESIDUAL_GROUP", "3", 1);
        expect_refused(d, HSPMN_ERR_INVALID_ARGUMENT, "HSPMN_DOWN_RESIDUAL_GROUP=3", 16, 16, 16, 0, 0, false);
        unsetenv("HSPMN_DOWN_RESIDUAL_GROUP");
        setenv("HSPMN_DOWN_RESIDUAL_L2", "2", 1);
        expect_refused(d, HSPMN_ERR_INVALID_ARGUMENT, "HSPMN_DOWN_RESIDUAL_L2=2", 16, 16, 16, 0, 0, false);
        unsetenv("HSPMN_DOWN_RESIDUAL_L2");
        if (do_bench) bench(d);
    });
}
