// skinny_gemm (src/cuda/kernels/skinny_gemm.cu) on a real device: every epilogue against a float64
// host product for odd M (1..32), tile-boundary N and K, mapped and gated rows, split-K determinism
// (two launches, same bits) and no write where nothing is gated; then the weight-streaming rate of
// the 1B decode shapes beside cuBLASLt at the same M, against a device-to-device copy's rate.
// Without a device it prints "skipped: no device" and exits 0.
//
//   skinny_gemm_cuda [--bench] [--sweep]   --bench adds the timing table, --sweep the launch-shape
//                                          sweep (the checks always run)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../src/core/bf16.h"
#include "../src/core/error.h"
#include "../src/cuda/device.h"
#include "../src/cuda/kernels/kernels.h"
#include "../src/cuda/runtime.h"
#include "cuda_check.h"

using namespace hspmn;
using namespace hspmn::cuda;

using bf16 = __nv_bfloat16;

static float bf(uint16_t h) { return bf16_to_f32(h); }
static float round_bf(float f) { return bf16_to_f32(f32_to_bf16(f)); }

// p[m][n] in float64 for the rows of x that token m reads.
static std::vector<double> product(const std::vector<uint16_t>& x, int64_t ldx, const std::vector<int32_t>& map,
                                   const std::vector<uint16_t>& w, int64_t M, int64_t N, int64_t K) {
    std::vector<double> p(static_cast<std::size_t>(M * N), 0.0);
    for (int64_t m = 0; m < M; ++m) {
        const int64_t r = map.empty() ? m : map[m];
        if (r < 0) continue;
        for (int64_t n = 0; n < N; ++n) {
            double s = 0.0;
            for (int64_t k = 0; k < K; ++k) s += static_cast<double>(bf(x[r * ldx + k])) * bf(w[n * K + k]);
            p[m * N + n] = s;
        }
    }
    return p;
}

// |got - want| <= 1e-5 |want| + 1e-5 sqrt(K) per element: f32 sums of K bf16 products.
static bool near(double got, double want, int64_t K) {
    return std::fabs(got - want) <= 1e-5 * std::fabs(want) + 1e-5 * std::sqrt(static_cast<double>(K));
}

static void test_shape(Device& d, std::mt19937& rng, int64_t M, int64_t N, int64_t K, bool mapped) {
    std::vector<DeviceBuffer> keep;
    const int64_t ldx = K + 8, rows = M + 3;  // padded stride: no hidden packing assumption
    auto x = random_bf16(rng, static_cast<std::size_t>(rows * ldx));
    auto w0 = random_bf16(rng, static_cast<std::size_t>(N * K), 0.05f);
    auto w1 = random_bf16(rng, static_cast<std::size_t>(N * K), 0.05f);
    std::vector<int32_t> map;
    if (mapped) {
        for (int64_t m = 0; m < M; ++m) map.push_back(m % 3 == 1 ? -1 : static_cast<int32_t>((m * 7) % rows));
    }
    const std::string tag = "M " + std::to_string(M) + " N " + std::to_string(N) + " K " + std::to_string(K) +
                            (mapped ? " mapped" : "");
    const bf16* dx = reinterpret_cast<const bf16*>(upload(d, x, keep));
    const bf16* dw0 = reinterpret_cast<const bf16*>(upload(d, w0, keep));
    const bf16* dw1 = reinterpret_cast<const bf16*>(upload(d, w1, keep));
    const int32_t* dmap = mapped ? upload(d, map, keep) : nullptr;
    const auto p0 = product(x, ldx, map, w0, M, N, K), p1 = product(x, ldx, map, w1, M, N, K);
    SkinnyScratch s;
    skinny_gemm_scratch(d, s, M, N, K, 2);
    const std::size_t MN = static_cast<std::size_t>(M * N);

    // F32, twice: split-K sums in a fixed order, so the bits repeat
    DeviceBuffer y32(d, MN * 4), y16(d, MN * 2);
    SkinnyEpilogue e;
    e.mode = SKINNY_F32;
    e.ldy = N;
    e.y_f32 = y32.as<float>();
    skinny_gemm(d, M, N, K, dx, ldx, dmap, dw0, nullptr, e, s);
    const auto a = download<float>(y32.data(), MN);
    skinny_gemm(d, M, N, K, dx, ldx, dmap, dw0, nullptr, e, s);
    const auto b = download<float>(y32.data(), MN);
    int bad = 0;
    for (std::size_t i = 0; i < MN; ++i) bad += !near(a[i], p0[i], K);
    EXPECT(bad == 0, "%s F32: %d of %zu elements off the float64 product", tag.c_str(), bad, MN);
    EXPECT(std::memcmp(a.data(), b.data(), MN * 4) == 0, "%s F32: two launches differ (split-K order)", tag.c_str());

    // BF16: the f32 result rounded once
    e.mode = SKINNY_BF16;
    e.y_bf16 = y16.as<bf16>();
    skinny_gemm(d, M, N, K, dx, ldx, dmap, dw0, nullptr, e, s);
    auto h = download<uint16_t>(y16.data(), MN);
    bad = 0;
    for (std::size_t i = 0; i < MN; ++i) bad += h[i] != f32_to_bf16(a[i]);
    EXPECT(bad == 0, "%s BF16: %d elements are not bf16(F32 result)", tag.c_str(), bad);

    // SWIGLU of the two products: the epilogue's arithmetic on the kernel's own f32 products (checked
    // against float64 above), emulated on the host; expf may differ from the device's in the last bit,
    // so one bf16 ulp of the result is allowed.
    e.mode = SKINNY_F32;
    skinny_gemm(d, M, N, K, dx, ldx, dmap, dw1, nullptr, e, s);
    const auto a1 = download<float>(y32.data(), MN);
    e.mode = SKINNY_SWIGLU;
    skinny_gemm(d, M, N, K, dx, ldx, dmap, dw0, dw1, e, s);
    h = download<uint16_t>(y16.data(), MN);
    bad = 0;
    for (std::size_t i = 0; i < MN; ++i) {
        const float g = round_bf(a[i]), u = round_bf(a1[i]);
        const uint16_t want = f32_to_bf16(g * (1.0f / (1.0f + std::exp(-g))) * u);
        bad += std::abs(static_cast<int>(h[i]) - static_cast<int>(want)) > 1;
    }
    EXPECT(bad == 0, "%s SWIGLU: %d elements more than one bf16 ulp from the emulation", tag.c_str(), bad);

    // RESIDUAL: y = residual + p in f32 and bf16
    auto resid = random_bf16(rng, MN);
    e = SkinnyEpilogue{};
    e.mode = SKINNY_RESIDUAL;
    e.ldy = N;
    e.y_f32 = y32.as<float>();
    e.y_bf16 = y16.as<bf16>();
    e.residual = reinterpret_cast<const bf16*>(upload(d, resid, keep));
    e.ld_residual = N;
    skinny_gemm(d, M, N, K, dx, ldx, dmap, dw0, nullptr, e, s);
    const auto rf = download<float>(y32.data(), MN);
    h = download<uint16_t>(y16.data(), MN);
    bad = 0;
    for (std::size_t i = 0; i < MN; ++i)
        bad += rf[i] != a[i] + bf(resid[i]) || h[i] != f32_to_bf16(rf[i]);
    EXPECT(bad == 0, "%s RESIDUAL: %d elements off", tag.c_str(), bad);

    // KV: y = p0; cache rows row_cache[m] (-1: none) = bf16(p1)
    std::vector<int64_t> rc(static_cast<std::size_t>(M));
    for (int64_t m = 0; m < M; ++m) rc[m] = m % 4 == 3 ? -1 : (M - 1 - m) * 2;
    const std::size_t cache_rows = static_cast<std::size_t>(2 * M);
    DeviceBuffer cache(d, cache_rows * N * 2);
    check(cudaMemset(cache.data(), 0xFF, cache_rows * N * 2), "poison");
    e = SkinnyEpilogue{};
    e.mode = SKINNY_KV;
    e.ldy = N;
    e.y_f32 = y32.as<float>();
    e.row_cache = upload(d, rc, keep);
    e.cache = cache.as<bf16>();
    skinny_gemm(d, M, N, K, dx, ldx, dmap, dw0, dw1, e, s);
    const auto kf = download<float>(y32.data(), MN);
    const auto ch = download<uint16_t>(cache.data(), cache_rows * N);
    const auto v32 = [&] {  // p1 through the same kernel in F32 mode, for the bit check of the rounding
        SkinnyEpilogue f;
        f.mode = SKINNY_F32;
        f.ldy = N;
        f.y_f32 = y32.as<float>();
        skinny_gemm(d, M, N, K, dx, ldx, dmap, dw1, nullptr, f, s);
        return download<float>(y32.data(), MN);
    }();
    bad = std::memcmp(kf.data(), a.data(), MN * 4) != 0;
    std::vector<bool> written(cache_rows, false);
    for (int64_t m = 0; m < M; ++m) {
        if (rc[m] < 0) continue;
        written[rc[m]] = true;
        for (int64_t n = 0; n < N; ++n) bad += ch[rc[m] * N + n] != f32_to_bf16(v32[m * N + n]);
    }
    for (std::size_t r = 0; r < cache_rows; ++r)
        if (!written[r])
            for (int64_t n = 0; n < N; ++n) bad += ch[r * N + n] != 0xFFFF;
    EXPECT(bad == 0, "%s KV: %d elements off (K = F32 result, V rows = bf16, other rows untouched)", tag.c_str(), bad);

    // SCATTER: out = bf16(res + p) on gated rows only, counts of the rows' slots reset; then all
    // gates 0: nothing written
    std::vector<int32_t> gate(static_cast<std::size_t>(M)), slots(static_cast<std::size_t>(M));
    for (int64_t m = 0; m < M; ++m) {
        gate[m] = m % 2 == 0;
        slots[m] = m % 5 == 4 ? -1 : static_cast<int32_t>(m);
    }
    std::vector<int32_t> counts(static_cast<std::size_t>(M), 7);
    std::vector<float> res_f(MN);
    for (auto& v : res_f) v = static_cast<float>(rng() % 1000) / 250.0f - 2.0f;
    DeviceBuffer out(d, MN * 2);
    check(cudaMemset(out.data(), 0xFF, MN * 2), "poison");
    int32_t* dcounts = upload(d, counts, keep);
    e = SkinnyEpilogue{};
    e.mode = SKINNY_SCATTER;
    e.ldy = N;
    e.y_bf16 = out.as<bf16>();
    e.residual_f32 = upload(d, res_f, keep);
    e.gate = upload(d, gate, keep);
    e.reset_slots = upload(d, slots, keep);
    e.reset_counts = dcounts;
    skinny_gemm(d, M, N, K, dx, ldx, dmap, dw0, nullptr, e, s);
    h = download<uint16_t>(out.data(), MN);
    const auto cnt = download<int32_t>(dcounts, static_cast<std::size_t>(M));
    bad = 0;
    for (int64_t m = 0; m < M; ++m) {
        for (int64_t n = 0; n < N; ++n) {
            const std::size_t i = static_cast<std::size_t>(m * N + n);
            bad += gate[m] ? h[i] != f32_to_bf16(res_f[i] + a[i]) : h[i] != 0xFFFF;
        }
        bad += cnt[m] != (slots[m] >= 0 ? 0 : 7);
    }
    EXPECT(bad == 0, "%s SCATTER: %d elements or counts off", tag.c_str(), bad);
    std::fill(gate.begin(), gate.end(), 0);
    check(cudaMemset(out.data(), 0xFF, MN * 2), "poison");
    e.gate = upload(d, gate, keep);
    skinny_gemm(d, M, N, K, dx, ldx, dmap, dw0, nullptr, e, s);
    h = download<uint16_t>(out.data(), MN);
    bad = 0;
    for (std::size_t i = 0; i < MN; ++i) bad += h[i] != 0xFFFF;
    EXPECT(bad == 0, "%s SCATTER with no gated row: %d elements written", tag.c_str(), bad);
}

// Median of `reps` launches of fn, in microseconds (events; several weight sets rotated so the L2
// holds none of them).
template <class Fn>
static double time_us(Device& d, int reps, Fn fn) {
    cudaEvent_t a, b;
    check(cudaEventCreate(&a), "event");
    check(cudaEventCreate(&b), "event");
    std::vector<float> t;
    for (int i = 0; i < 3; ++i) fn(i);
    for (int i = 0; i < reps; ++i) {
        check(cudaEventRecord(a, stream(d)), "record");
        fn(i);
        check(cudaEventRecord(b, stream(d)), "record");
        check(cudaEventSynchronize(b), "sync");
        float ms = 0;
        check(cudaEventElapsedTime(&ms, a, b), "elapsed");
        t.push_back(ms * 1000.0f);
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

// A decode GEMM of the 1B model: y[M, N] = x[M, K] W^T over `matrices` weights (2: gate and up, SwiGLU).
struct BenchShape {
    const char* name;
    int64_t N, K;
    int matrices;
};

constexpr int kSets = 4;  // rotated weight sets: 4 x 67 MB > L2

// kSets copies of one random weight set of a shape, an x of 32 rows and a y for 32 rows, on the device.
struct BenchInputs {
    std::vector<DeviceBuffer> keep;
    std::vector<const bf16*> w;  // [kSets * matrices]
    const bf16* x = nullptr;
    DeviceBuffer y;

    BenchInputs(Device& d, std::mt19937& rng, const BenchShape& sh)
        : y(d, static_cast<std::size_t>(32 * sh.N) * 4) {
        const auto host = random_bf16(rng, static_cast<std::size_t>(sh.N * sh.K), 0.05f);
        for (int i = 0; i < kSets * sh.matrices; ++i) w.push_back(reinterpret_cast<const bf16*>(upload(d, host, keep)));
        const auto xh = random_bf16(rng, static_cast<std::size_t>(32 * sh.K));
        x = reinterpret_cast<const bf16*>(upload(d, xh, keep));
    }
};

// Median time of skinny_gemm at M rows of the shape, in microseconds, with the current skinny_tuning().
static double time_skinny(Device& d, const BenchShape& sh, BenchInputs& in, int64_t M, int reps) {
    SkinnyScratch s;
    skinny_gemm_scratch(d, s, 32, sh.N, sh.K, sh.matrices);
    SkinnyEpilogue e;
    e.mode = sh.matrices == 2 ? SKINNY_SWIGLU : SKINNY_F32;
    e.ldy = sh.N;
    e.y_f32 = in.y.as<float>();
    e.y_bf16 = in.y.as<bf16>();
    return time_us(d, reps, [&](int i) {
        const int set = i % kSets;
        skinny_gemm(d, M, sh.N, sh.K, in.x, sh.K, nullptr, in.w[set * sh.matrices],
                    sh.matrices == 2 ? in.w[set * sh.matrices + 1] : nullptr, e, s);
    });
}

static void bench(Device& d) {
    // copy ceiling: 1 GiB device to device, bytes read + written
    const std::size_t big = std::size_t{1} << 30;
    DeviceBuffer src(d, big), dst(d, big);
    check(cudaMemset(src.data(), 1, big), "fill");
    const double copy_us = time_us(d, 10, [&](int) {
        check(cudaMemcpyAsync(dst.data(), src.data(), big, cudaMemcpyDeviceToDevice, stream(d)), "copy");
    });
    const double copy_gbs = 2.0 * big / copy_us / 1e3;
    std::printf("device copy: %.0f GB/s (read + write)\n", copy_gbs);
    const BenchShape shapes[] = {{"gate+up", 8192, 2048, 2}, {"down", 2048, 8192, 1}, {"k+v", 512, 2048, 2},
                                 {"q or o", 2048, 2048, 1}};
    std::printf("%-8s %3s %10s %10s %8s %10s %10s\n", "shape", "M", "skinny us", "GB/s", "% copy", "cublas us",
                "GB/s");
    std::mt19937 rng(7);
    for (const BenchShape& sh : shapes) {
        BenchInputs in(d, rng, sh);
        DeviceBuffer y2(d, static_cast<std::size_t>(32 * sh.N) * 4);
        for (int64_t M : {int64_t{1}, int64_t{8}, int64_t{32}}) {
            const double us = time_skinny(d, sh, in, M, 50);
            const double cu = time_us(d, 50, [&](int i) {
                const int set = i % kSets;
                for (int j = 0; j < sh.matrices; ++j)
                    gemm(d, false, true, M, sh.N, sh.K, 1.0f, in.x, sh.K, in.w[set * sh.matrices + j], sh.K, 0.0f,
                         j == 0 ? in.y.data() : y2.data(), DType::F32, sh.N);
            });
            const double bytes = static_cast<double>(sh.matrices) * sh.N * sh.K * 2.0;
            std::printf("%-8s %3lld %10.2f %10.0f %7.0f%% %10.2f %10.0f\n", sh.name, static_cast<long long>(M), us,
                        bytes / us / 1e3, 100.0 * bytes / us / 1e3 / copy_gbs, cu, bytes / cu / 1e3);
        }
    }
}

// Launch shapes: unroll x blocks per SM for the 1B shapes, to choose the defaults.
static void sweep(Device& d) {
    const BenchShape shapes[] = {{"gate+up", 8192, 2048, 2}, {"down", 2048, 8192, 1}, {"q or o", 2048, 2048, 1}};
    std::mt19937 rng(9);
    std::printf("sweep: GB/s by pipeline stages (rows) x blocks per SM (columns)\n");
    for (const BenchShape& sh : shapes) {
        BenchInputs in(d, rng, sh);
        for (int64_t M : {int64_t{1}, int64_t{8}, int64_t{32}}) {
            std::printf("%-8s M=%-3lld", sh.name, static_cast<long long>(M));
            for (int bps : {1, 2, 4, 8, 16}) std::printf(" %8s%d", "bps", bps);
            std::printf("\n");
            for (int u : {2, 3, 12, 13}) {  // 1x: interleaved k tiles
                std::printf("  stages %d%s", u % 10, u > 10 ? " il" : "   ");
                for (int bps : {1, 2, 4, 8, 16}) {
                    skinny_tuning().stages = u % 10;
                    skinny_tuning().interleave = u > 10;
                    skinny_tuning().blocks_per_sm = bps;
                    const double us = time_skinny(d, sh, in, M, 30);
                    std::printf(" %9.0f", static_cast<double>(sh.matrices) * sh.N * sh.K * 2.0 / us / 1e3);
                }
                std::printf("\n");
            }
        }
    }
    skinny_tuning().stages = skinny_tuning().blocks_per_sm = skinny_tuning().interleave = 0;
}

int main(int argc, char** argv) {
    const bool do_bench = argc > 1 && std::strcmp(argv[1], "--bench") == 0;
    const bool do_sweep = argc > 1 && std::strcmp(argv[argc - 1], "--sweep") == 0;
    return run_on_device([&](Device& d) {
        d.activate();
        std::mt19937 rng(42);
        for (int interleave : {0, 1}) {  // both k-tile assignments (SkinnyTuning::interleave)
            skinny_tuning().interleave = interleave;
            for (int64_t M : {1, 3, 8, 9, 16, 17, 31, 32})
                for (auto nk : {std::pair<int64_t, int64_t>{16, 32}, {48, 104}, {512, 2048}, {2048, 8192}})
                    test_shape(d, rng, M, nk.first, nk.second, M % 2 == 1);
        }
        skinny_tuning().interleave = 0;
        EXPECT(!skinny_gemm_fits(33, 16, 32) && !skinny_gemm_fits(1, 24, 32) && !skinny_gemm_fits(1, 16, 36),
               "skinny_gemm_fits accepts a shape it cannot run");
        if (do_bench) bench(d);
        if (do_sweep) sweep(d);
    });
}
