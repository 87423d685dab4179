// gemm's cuBLASLt algorithm search (src/cuda/gemm_search.h) on a real device:
//   - the cache file's line format (round trip, malformed lines refused): runs without a device too;
//   - searched GEMMs against float64 (odd shapes, every transpose, bf16/f32 C, beta = 1 accumulation:
//     C must be C_old + AB, so the timing never wrote the caller's C);
//   - a second context bitwise equal to the first (it takes the process's choices), and two contexts
//     searching the same new shape at once on two threads bitwise equal;
//   - --bench: the block's GEMM shapes (B 64 x S 4096 rows, D 2048, F 8192, KV 512, top-k 0.2), the
//     heuristic's first algorithm against the searched one, TFLOP/s per shape and totals; also the
//     pairs the block ran before it stacked [W_gate; W_up] and [W_k; W_v] (each pair now one GEMM),
//     with the totals of that block beside;
//   - --digest [--expect-cached]: fixed GEMMs on a context of the process's settings, then a digest of
//     their bits (ci/gpu-gemm-search.sh runs it twice with one HSPMN_GEMM_CACHE: the second run must
//     take every choice from the file and print the same digest).
// Without a device it prints "skipped: no device" after the format checks and exits 0.
#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "../src/cuda/gemm_search.h"
#include "cuda_check.h"
#include "gemm_check.h"

using namespace hspmn;
using namespace hspmn::cuda;

using bf16 = __nv_bfloat16;

namespace {

void test_cache_lines() {
    GemmKey k{true, false, 262144, 2048, 8192, 2048, 8192, 2048, static_cast<int>(DType::F32), 256, 128, 16, true};
    GemmChoice c;
    auto* bytes = reinterpret_cast<unsigned char*>(&c.algo);
    for (std::size_t i = 0; i < sizeof(c.algo); ++i) bytes[i] = static_cast<unsigned char>(i * 37 + 11);
    c.workspace = 12345;
    const std::string line = gemm_cache_format("NVIDIA_H100/sm90/132sm/lt130100", k, c);
    std::string dev;
    GemmKey k2{};
    GemmChoice c2;
    EXPECT(gemm_cache_parse(line, &dev, &k2, &c2), "%s", line.c_str());
    EXPECT(dev == "NVIDIA_H100/sm90/132sm/lt130100");
    EXPECT(!(k < k2) && !(k2 < k), "the key survives the round trip");
    EXPECT(std::memcmp(&c.algo, &c2.algo, sizeof(c.algo)) == 0 && c2.workspace == 12345);
    // Every truncation, an extra field, bad hex, out-of-range fields: refused, never a crash.
    for (std::size_t n = 0; n < line.size(); n += 7) EXPECT(!gemm_cache_parse(line.substr(0, n), &dev, &k2, &c2));
    const std::string hex = line.substr(line.rfind(' ') + 1);
    const std::string head = line.substr(0, line.rfind(' ') + 1);
    EXPECT(!gemm_cache_parse(line + " 7", &dev, &k2, &c2));
    EXPECT(!gemm_cache_parse(head + "zz" + hex.substr(2), &dev, &k2, &c2));
    EXPECT(!gemm_cache_parse(head + hex + "00", &dev, &k2, &c2));
    std::string bad = line;
    bad.replace(bad.find(" 1 0 "), 5, " 2 0 ");  // trans_a must be 0 or 1
    EXPECT(!gemm_cache_parse(bad, &dev, &k2, &c2));
    EXPECT(!gemm_cache_parse(kGemmCacheHeader, &dev, &k2, &c2));
    EXPECT(!gemm_cache_parse("", &dev, &k2, &c2));
}

GemmChoice fake_choice(unsigned char fill, std::size_t workspace) {
    GemmChoice c;
    std::memset(&c.algo, fill, sizeof(c.algo));
    c.workspace = workspace;
    return c;
}

bool same_choice(const GemmChoice& a, const GemmChoice& b) {
    return std::memcmp(&a.algo, &b.algo, sizeof(a.algo)) == 0 && a.workspace == b.workspace;
}

// The memo and the cache file without a device (fake device ids): `path` is HSPMN_GEMM_CACHE, set by
// main before anything read the settings. A file line is a FILE entry; keeping a choice over it makes
// it the process's and appends it; the first PROCESS choice kept wins; malformed lines are skipped.
void test_memo(const std::string& path) {
    const GemmKey k1{false, true, 100, 200, 300, 300, 300, 200, static_cast<int>(DType::F32), 256, 256, 256, false};
    GemmKey k2 = k1, k3 = k1;
    k2.accumulate = true;
    k3.M = 101;
    const GemmChoice a = fake_choice(0xa1, 64), b = fake_choice(0xb2, 128), c = fake_choice(0xc3, 0);
    {
        std::FILE* f = std::fopen(path.c_str(), "w");
        EXPECT(f != nullptr, "cannot write %s", path.c_str());
        if (!f) return;
        std::fprintf(f, "%s\n%s\nnot a line\n%s\n%s\n", kGemmCacheHeader, gemm_cache_format("test-gpu", k1, a).c_str(),
                     gemm_cache_format("test-gpu", k2, a).substr(0, 30).c_str(),
                     gemm_cache_format("test-gpu", k2, b).c_str());
        std::fclose(f);
    }
    EXPECT(gemm_search_settings().cache_path == path);
    GemmChoice got;
    EXPECT(gemm_memo_find("test-gpu", k1, &got) == MemoEntry::FILE && same_choice(got, a));
    EXPECT(gemm_memo_find("test-gpu", k2, &got) == MemoEntry::FILE && same_choice(got, b));
    EXPECT(gemm_memo_find("other-gpu", k1, &got) == MemoEntry::NONE, "entries are per device id");
    EXPECT(gemm_memo_find("test-gpu", k3, &got) == MemoEntry::NONE);
    // k1 from the file, confirmed (not appended); k2's file entry replaced by a search (appended);
    // k3 searched twice at once: the first kept wins.
    EXPECT(same_choice(gemm_memo_keep("test-gpu", k1, a, false), a));
    EXPECT(same_choice(gemm_memo_keep("test-gpu", k2, c, true), c));
    EXPECT(same_choice(gemm_memo_keep("test-gpu", k3, b, true), b));
    EXPECT(same_choice(gemm_memo_keep("test-gpu", k3, c, true), b), "a second choice must not replace the first");
    EXPECT(gemm_memo_find("test-gpu", k1, &got) == MemoEntry::PROCESS && same_choice(got, a));
    EXPECT(gemm_memo_find("test-gpu", k2, &got) == MemoEntry::PROCESS && same_choice(got, c));
    std::vector<std::string> lines;
    if (std::FILE* f = std::fopen(path.c_str(), "r")) {
        char buf[1024];
        while (std::fgets(buf, sizeof buf, f)) lines.emplace_back(buf, std::strcspn(buf, "\n"));
        std::fclose(f);
    }
    EXPECT(lines.size() == 7 && lines[5] == gemm_cache_format("test-gpu", k2, c) &&
               lines[6] == gemm_cache_format("test-gpu", k3, b),
           "the file must gain k2's and k3's searched lines, nothing else (%zu lines)", lines.size());
}

struct Case {
    int64_t M, N, K;
    bool ta, tb;
    DType ct;
    bool accumulate;
};

// Odd shapes (every transpose, both C types) and accumulation, including sizes where split-K and
// several tile shapes are among the candidates.
std::vector<Case> check_cases() {
    std::vector<Case> cases;
    const int64_t shapes[][3] = {{3, 5, 7}, {17, 33, 65}, {129, 67, 255}, {300, 260, 1500}};
    for (const auto& s : shapes)
        for (int t = 0; t < 4; ++t)
            for (DType ct : {DType::F32, DType::BF16})
                cases.push_back({s[0], s[1], s[2], (t & 1) != 0, (t & 2) != 0, ct, false});
    for (int t = 0; t < 4; ++t) {
        cases.push_back({129, 67, 255, (t & 1) != 0, (t & 2) != 0, DType::F32, true});
        cases.push_back({300, 260, 1500, (t & 1) != 0, (t & 2) != 0, DType::F32, true});
        cases.push_back({64, 96, 3000, (t & 1) != 0, (t & 2) != 0, DType::BF16, true});
    }
    return cases;
}

std::vector<std::vector<float>> run_cases(Device& d, const std::vector<Case>& cases, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<std::vector<float>> out;
    for (const Case& c : cases) out.push_back(test_gemm(d, rng, c.M, c.N, c.K, c.ta, c.tb, c.ct, c.accumulate));
    return out;
}

// c's C after gemm on random inputs from `seed`, without the float64 check (for threads: EXPECT counts
// are not atomic).
std::vector<float> gemm_bits(Device& d, const Case& c, unsigned seed) {
    std::mt19937 rng(seed);
    const int64_t a_size = c.M * c.K, b_size = c.K * c.N, c_size = c.M * c.N;
    std::vector<DeviceBuffer> keep;
    const auto* A = reinterpret_cast<const bf16*>(upload(d, random_bf16(rng, a_size), keep));
    const auto* B = reinterpret_cast<const bf16*>(upload(d, random_bf16(rng, b_size), keep));
    void* C = upload(d, random_f32(rng, c_size), keep);  // bf16 C: only its first half is used
    gemm(d, c.ta, c.tb, c.M, c.N, c.K, 1.0f, A, c.ta ? c.M : c.K, B, c.tb ? c.K : c.N, c.accumulate ? 1.0f : 0.0f, C,
         c.ct, c.N);
    if (c.ct == DType::F32) return download<float>(C, c_size);
    std::vector<float> out;
    for (uint16_t h : download<uint16_t>(C, c_size)) out.push_back(bf16_to_f32(h));
    return out;
}

bool same_bits(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (a[i].size() != b[i].size() || std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)) != 0)
            return false;
    return true;
}

std::unique_ptr<Device> context(int search) {
    auto d = std::make_unique<Device>(0);
    d->gemm_search = search;
    return d;
}

void test_search(Device& d) {
    const std::vector<Case> cases = check_cases();
    d.gemm_search = static_cast<int>(GemmSearch::EVERY_SHAPE);
    const GemmSearchCounts c0 = gemm_search_counts();
    const auto first = run_cases(d, cases, 11);
    const GemmSearchCounts c1 = gemm_search_counts();
    std::printf("search: %zu gemm shapes, %lld searched, %lld candidates failed to launch\n", cases.size(),
                static_cast<long long>(c1.searched - c0.searched), static_cast<long long>(c1.failed - c0.failed));
    EXPECT(c1.searched - c0.searched == static_cast<int64_t>(cases.size()), "every new shape is searched");

    // Another context of the process: the same algorithms (from the memo), so the same bits; no search.
    {
        auto d2 = context(static_cast<int>(GemmSearch::ON));
        const auto second = run_cases(*d2, cases, 11);
        const GemmSearchCounts c2 = gemm_search_counts();
        EXPECT(same_bits(first, second), "two contexts of one process compute other bits");
        EXPECT(c2.searched == c1.searched && c2.memo_hits - c1.memo_hits == static_cast<int64_t>(cases.size()),
               "the second context takes every choice from the memo (searched %lld, memo hits %lld)",
               static_cast<long long>(c2.searched - c1.searched), static_cast<long long>(c2.memo_hits - c1.memo_hits));
    }

    // Two contexts meeting new shapes at the same moment on two threads: the first choice kept wins.
    {
        const std::vector<Case> fresh = {{513, 385, 1023, false, true, DType::F32, false},
                                         {200, 300, 4000, true, false, DType::F32, true},
                                         {1000, 64, 2048, false, true, DType::BF16, false}};
        auto a = context(static_cast<int>(GemmSearch::EVERY_SHAPE));
        auto b = context(static_cast<int>(GemmSearch::EVERY_SHAPE));
        std::vector<std::vector<float>> out_a, out_b;
        std::string err_a, err_b;
        std::atomic<int> ready{0};
        auto body = [&](Device* dev, std::vector<std::vector<float>>* out, std::string* err) {
            try {
                dev->activate();
                ++ready;
                while (ready.load() < 2) std::this_thread::yield();
                for (const Case& c : fresh) out->push_back(gemm_bits(*dev, c, 23));
            } catch (const Error& e) {
                *err = e.message;
            }
        };
        const GemmSearchCounts c3 = gemm_search_counts();
        std::thread ta(body, a.get(), &out_a, &err_a), tb(body, b.get(), &out_b, &err_b);
        ta.join();
        tb.join();
        const GemmSearchCounts c4 = gemm_search_counts();
        EXPECT(err_a.empty() && err_b.empty(), "threads: '%s' '%s'", err_a.c_str(), err_b.c_str());
        std::printf("two threads: %lld searches for %zu new shapes\n",
                    static_cast<long long>(c4.searched - c3.searched), fresh.size());
        EXPECT(c4.searched - c3.searched >= static_cast<int64_t>(fresh.size()));
        EXPECT(same_bits(out_a, out_b), "two contexts searching at once compute other bits");
    }

    // Search off: the heuristic's first answer, the process's choices neither read nor counted.
    {
        auto off = context(static_cast<int>(GemmSearch::OFF));
        const GemmSearchCounts c5 = gemm_search_counts();
        run_cases(*off, {cases[6], cases.back()}, 31);
        const GemmSearchCounts c6 = gemm_search_counts();
        EXPECT(c6.searched == c5.searched && c6.memo_hits == c5.memo_hits, "OFF touched the memo");
    }
}

// ---- --digest ----

uint64_t fnv1a(const std::vector<std::vector<float>>& v) {
    uint64_t h = 1469598103934665603ull;
    for (const auto& x : v) {
        const auto* p = reinterpret_cast<const unsigned char*>(x.data());
        for (std::size_t i = 0; i < x.size() * sizeof(float); ++i) h = (h ^ p[i]) * 1099511628211ull;
    }
    return h;
}

void digest(Device& d, bool expect_cached) {
    if (gemm_search_settings().mode != GemmSearch::EVERY_SHAPE) {
        EXPECT(false, "--digest needs HSPMN_GEMM_SEARCH=all (and HSPMN_GEMM_CACHE)");
        return;
    }
    const std::vector<Case> cases = {{300, 260, 1500, false, true, DType::F32, false},
                                     {300, 260, 1500, true, false, DType::F32, true},
                                     {64, 96, 3000, false, false, DType::BF16, true},
                                     {256, 384, 1024, false, true, DType::BF16, false},
                                     {1000, 64, 2048, true, true, DType::F32, false}};
    const GemmSearchCounts c0 = gemm_search_counts();
    const uint64_t h = fnv1a(run_cases(d, cases, 47));
    const GemmSearchCounts c1 = gemm_search_counts();
    const long long searched = c1.searched - c0.searched, from_file = c1.file_hits - c0.file_hits;
    std::printf("gemm digest %016" PRIx64 "\n", h);
    std::printf("gemm counts: %zu shapes, %lld searched, %lld from the cache file\n", cases.size(), searched,
                from_file);
    if (expect_cached)
        EXPECT(searched == 0 && from_file == static_cast<long long>(cases.size()),
               "a second process must take every choice from HSPMN_GEMM_CACHE");
    else
        EXPECT(searched + from_file == static_cast<long long>(cases.size()));
}

// ---- --bench ----

// A buffer of `bytes` filled with repeats of one random bf16 block (GEMM speed depends on the data's
// toggling, so not zeros).
DeviceBuffer random_buffer(Device& d, std::size_t bytes, const DeviceBuffer& block) {
    DeviceBuffer b(d, bytes);
    for (std::size_t at = 0; at < bytes; at += block.bytes())
        check(cudaMemcpy(b.as<char>() + at, block.data(), std::min(block.bytes(), bytes - at),
                         cudaMemcpyDeviceToDevice),
              "fill");
    return b;
}

// One GEMM of the block, packed as it runs there: lda, ldb, ldc are the stored matrices' widths; a
// weight gradient (trans_a) accumulates into the gradient buffer, everything else writes `out`.
struct BenchGemm {
    const char* name;
    int count;        // calls per block step
    int count_split;  // calls per block step before the stacked weights (gate/up, k/v pairs apart)
    bool backward;
    bool ta, tb;
    int64_t M, N, K;
    const void* A;
    const void* B;
    bool accumulate;
    DType ct;
};

template <class Fn>
double time_ms(Device& d, int reps, Fn fn) {
    cudaEvent_t a, b;
    check(cudaEventCreate(&a), "event");
    check(cudaEventCreate(&b), "event");
    check(cudaEventRecord(a, stream(d)), "record");
    for (int i = 0; i < reps; ++i) fn();
    check(cudaEventRecord(b, stream(d)), "record");
    check(cudaEventSynchronize(b), "sync");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "elapsed");
    (void)cudaEventDestroy(a);
    (void)cudaEventDestroy(b);
    return ms / reps;
}

void bench(Device& d) {
    const int64_t N = 64 * 4096, D = 2048, F = 8192, KV = 512, Q = 64 * 819;  // topk_count(4096, 0.2f) = 819
    std::mt19937 rng(5);
    DeviceBuffer block(d, std::size_t{32} << 20);
    {
        std::vector<DeviceBuffer> keep;
        auto* src = upload(d, random_bf16(rng, block.bytes() / 2), keep);
        check(cudaMemcpy(block.data(), src, block.bytes(), cudaMemcpyDeviceToDevice), "fill");
    }
    // operands [N, 2F] and [N, D] bf16, [N, 2 KV] bf16, a weight [2F, D] bf16; outputs [N, 2F] bf16 (or
    // [N, D] f32) and a weight gradient [2F, D] f32 (the stacked shapes' sizes; the others use a part)
    DeviceBuffer nf = random_buffer(d, N * 2 * F * 2, block), nd = random_buffer(d, N * D * 2, block),
                 nkv = random_buffer(d, N * 2 * KV * 2, block), w = random_buffer(d, 2 * F * D * 2, block),
                 out(d, N * 2 * F * 2), grad(d, 2 * F * D * 4);
    out.zero(d);
    grad.zero(d);
    check(cudaStreamSynchronize(stream(d)), "sync");
    // count: calls in the block now; count_split: before the stacking (gate, up, d_c, dW_gate/up, d_a and
    // dW_k/v as pairs). A row with count 0 is timed for the comparison only.
    const int64_t F2 = 2 * F, KV2 = 2 * KV;
    const void *pnd = nd.data(), *pnf = nf.data(), *pkv = nkv.data(), *pw = w.data();
    const DType f32 = DType::F32, b16 = DType::BF16;
    const BenchGemm shapes[] = {
        {"gate|up [2F]", 1, 0, false, false, true, N, F2, D, pnd, pw, false, b16},
        {"gate, up", 0, 2, false, false, true, N, F, D, pnd, pw, false, b16},
        {"down +=", 1, 1, false, false, true, N, D, F, pnf, pw, true, f32},
        {"k (f32)", 1, 1, false, false, true, N, KV, D, pnd, pw, false, f32},
        {"v (bf16)", 1, 1, false, false, true, N, KV, D, pnd, pw, false, b16},
        {"q, o", 2, 2, false, false, true, Q, D, D, pnd, pw, false, f32},
        {"dWo, dWq +=", 2, 2, true, true, false, D, D, Q, pnd, pnf, true, f32},
        {"d_attn, d_asel", 2, 2, true, false, false, Q, D, D, pnd, pw, false, b16},
        {"dWk|v [2KV] +=", 1, 0, true, true, false, KV2, D, N, pkv, pnd, true, f32},
        {"dWk, dWv +=", 0, 2, true, true, false, KV, D, N, pkv, pnd, true, f32},
        {"d_a (K 2KV)", 1, 0, true, false, false, N, D, KV2, pkv, pw, false, f32},
        {"d_a (k)", 0, 1, true, false, false, N, D, KV, pkv, pw, false, f32},
        {"d_a (v) +=", 0, 1, true, false, false, N, D, KV, pkv, pw, true, f32},
        {"dW_down +=", 1, 1, true, true, false, D, F, N, pnd, pnf, true, f32},
        {"d_act", 1, 1, true, false, false, N, F, D, pnd, pw, false, b16},
        {"dWg|u [2F] +=", 1, 0, true, true, false, F2, D, N, pnf, pnd, true, f32},
        {"dW_gate, up +=", 0, 2, true, true, false, F, D, N, pnf, pnd, true, f32},
        {"d_c (K 2F)", 1, 0, true, false, false, N, D, F2, pnf, pw, false, f32},
        {"d_c", 0, 1, true, false, false, N, D, F, pnf, pw, false, f32},
        {"d_c +=", 0, 1, true, false, false, N, D, F, pnf, pw, true, f32},
    };
    auto first = context(static_cast<int>(GemmSearch::OFF));
    d.gemm_search = static_cast<int>(GemmSearch::EVERY_SHAPE);
    // [split][backward]: totals of the block now (0) and before the stacking (1)
    double ms_first[2][2] = {}, ms_best[2][2] = {}, flops[2][2] = {};
    std::printf("%-18s %6s %6s %6s %3s %9s %9s %9s %9s %7s\n", "gemm (now, split)", "M", "N", "K", "tT", "first ms",
                "TFLOP/s", "search ms", "TFLOP/s", "speedup");
    for (const BenchGemm& g : shapes) {
        auto call = [&](Device& dev) {
            gemm(dev, g.ta, g.tb, g.M, g.N, g.K, 1.0f, static_cast<const bf16*>(g.A), g.ta ? g.M : g.K,
                 static_cast<const bf16*>(g.B), g.tb ? g.K : g.N, g.accumulate ? 1.0f : 0.0f,
                 g.ta ? grad.data() : out.data(), g.ct, g.N);
        };
        call(*first);  // the plans (the search runs in d's); first's stream idle before d's search times
        check(cudaStreamSynchronize(stream(*first)), "sync");
        call(d);
        double tf = 0, tb = 0;
        for (int round = 0; round < 2; ++round) {  // interleaved, so clock drift falls on both
            tf += time_ms(*first, 3, [&] { call(*first); });
            tb += time_ms(d, 3, [&] { call(d); });
        }
        tf /= 2;
        tb /= 2;
        const double flop = 2.0 * static_cast<double>(g.M) * static_cast<double>(g.N) * static_cast<double>(g.K);
        std::printf("%-14s x%d,%d %6lld %6lld %6lld %d%d %9.3f %9.1f %9.3f %9.1f %6.3fx\n", g.name, g.count,
                    g.count_split, static_cast<long long>(g.M), static_cast<long long>(g.N),
                    static_cast<long long>(g.K), g.ta, g.tb, tf, flop / tf / 1e9, tb, flop / tb / 1e9, tf / tb);
        for (int split = 0; split < 2; ++split) {
            const int n = split ? g.count_split : g.count;
            ms_first[split][g.backward] += n * tf;
            ms_best[split][g.backward] += n * tb;
            flops[split][g.backward] += n * flop;
        }
    }
    const char* names[2] = {"forward", "backward"};
    for (int split = 0; split < 2; ++split) {
        for (int i = 0; i < 3; ++i) {  // forward, backward, both
            const double* mf = ms_first[split];
            const double* mb = ms_best[split];
            const double* fs = flops[split];
            const double f = i < 2 ? mf[i] : mf[0] + mf[1];
            const double b = i < 2 ? mb[i] : mb[0] + mb[1];
            const double fl = i < 2 ? fs[i] : fs[0] + fs[1];
            std::printf("total %-5s %-9s: first %8.2f ms %6.1f TFLOP/s, searched %8.2f ms %6.1f TFLOP/s, speedup "
                        "%.3fx\n", split ? "split" : "now", i < 2 ? names[i] : "block", f, fl / f / 1e9, b,
                        fl / b / 1e9, f / b);
        }
    }
    check(cudaStreamSynchronize(stream(*first)), "sync");
}

}  // namespace

int main(int argc, char** argv) {
    bool do_bench = false, do_digest = false, expect_cached = false;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--bench") == 0) do_bench = true;
        else if (std::strcmp(argv[i], "--digest") == 0) do_digest = true;
        else if (std::strcmp(argv[i], "--expect-cached") == 0) expect_cached = true;
        else {
            std::printf("usage: gemm_search_cuda [--bench] [--digest [--expect-cached]]\n");
            return 2;
        }
    }
    test_cache_lines();
    // Unless a cache file is given (--digest), the memo checks get one of their own; the device checks
    // below then append their searches to it too, and it is removed at the end.
    std::string own_cache;
    if (!std::getenv("HSPMN_GEMM_CACHE")) {
        char tmpl[] = "/tmp/hspmn-gemm-cache-XXXXXX";
        const int fd = mkstemp(tmpl);
        EXPECT(fd >= 0, "mkstemp");
        if (fd >= 0) {
            close(fd);
            own_cache = tmpl;
            setenv("HSPMN_GEMM_CACHE", tmpl, 1);
            test_memo(own_cache);
        }
    }
    const int line_failures = g_failures;
    std::printf("cache file and memo: %d checks, %d failures\n", g_checks, line_failures);
    const int rc = run_on_device([&](Device& d) {
        if (do_digest) {
            digest(d, expect_cached);
            return;
        }
        test_search(d);
        if (do_bench) bench(d);
    });
    if (!own_cache.empty()) std::remove(own_cache.c_str());
    return line_failures == 0 ? rc : 1;  // without a device run_on_device reports nothing
}
