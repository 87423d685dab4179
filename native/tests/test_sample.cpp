// hspmn_sample on the CPU backend through the public ABI: every bad argument is refused with a message
// naming it, bad logits rows become HSPMN_ERR_NON_FINITE naming the row, pinned tokens of the
// definition (native/README.md "Sampling"; the same pins are in SamplerTest, so Java and C agree),
// greedy and top-1 ties, kept sets, repeatability, no allocation on a warm call. The comparison with
// the definition on thousands of random rows is native/reference/check_sample.py.
#include <algorithm>
#include <cmath>
#include <functional>
#include <cstdint>
#include <random>
#include <vector>

#include "abi_check.h"

namespace {

hspmn_sampling_params params(float t, int32_t k, float p, uint64_t seed, int64_t draw) {
    hspmn_sampling_params s = hspmn_sampling_default_params();
    s.temperature = t;
    s.top_k = k;
    s.top_p = p;
    s.seed = seed;
    s.draw = draw;
    return s;
}

struct Rows {
    hspmn_context* ctx;
    hspmn_tensor* logits;
    hspmn_tensor* tokens;
    int64_t n, V;
    Rows(hspmn_context* c, const std::vector<float>& x, int64_t n_, int64_t V_) : ctx(c), n(n_), V(V_) {
        logits = make(ctx, HSPMN_DTYPE_F32, {n, V});
        tokens = make(ctx, HSPMN_DTYPE_I32, {n});
        OK(hspmn_tensor_copy_in(logits, x.data(), 4 * n * V));
    }
    ~Rows() {
        OK(hspmn_tensor_destroy(logits));
        OK(hspmn_tensor_destroy(tokens));
    }
    hspmn_status run(const std::vector<hspmn_sampling_params>& p) { return hspmn_sample(ctx, logits, p.data(), tokens); }
    std::vector<int32_t> out() {
        std::vector<int32_t> t(static_cast<std::size_t>(n));
        OK(hspmn_tensor_copy_out(tokens, t.data(), 4 * n));
        return t;
    }
};

// The same row n times with draws 1..n.
std::vector<int32_t> draws(hspmn_context* ctx, const std::vector<float>& row, hspmn_sampling_params p, int n) {
    const int64_t V = static_cast<int64_t>(row.size());
    std::vector<float> x;
    std::vector<hspmn_sampling_params> ps;
    for (int i = 0; i < n; ++i) {
        x.insert(x.end(), row.begin(), row.end());
        p.draw = i + 1;
        ps.push_back(p);
    }
    Rows r(ctx, x, n, V);
    OK(r.run(ps));
    return r.out();
}

void test_defaults() {
    hspmn_sampling_params p = hspmn_sampling_default_params();
    EXPECT(p.temperature == 0.0f && p.top_k == 0 && p.top_p == 1.0f && p.reserved == 0 && p.seed == 0 && p.draw == 1);
}

void test_bad_arguments(hspmn_context* ctx) {
    std::vector<float> x(3 * 5, 0.5f);
    Rows r(ctx, x, 3, 5);
    std::vector<hspmn_sampling_params> ok(3, params(1.0f, 0, 1.0f, 1, 1));
    OK(r.run(ok));
    EXPECT_STATUS(hspmn_sample(nullptr, r.logits, ok.data(), r.tokens), HSPMN_ERR_INVALID_ARGUMENT, "ctx is NULL");
    EXPECT_STATUS(hspmn_sample(ctx, nullptr, ok.data(), r.tokens), HSPMN_ERR_INVALID_ARGUMENT, "logits is NULL");
    EXPECT_STATUS(hspmn_sample(ctx, r.logits, nullptr, r.tokens), HSPMN_ERR_INVALID_ARGUMENT, "params is NULL");
    EXPECT_STATUS(hspmn_sample(ctx, r.logits, ok.data(), nullptr), HSPMN_ERR_INVALID_ARGUMENT, "tokens is NULL");

    hspmn_tensor* bf = make(ctx, HSPMN_DTYPE_BF16, {3, 5});
    EXPECT_STATUS(hspmn_sample(ctx, bf, ok.data(), r.tokens), HSPMN_ERR_DTYPE, "logits: expected dtype f32");
    hspmn_tensor* flat = make(ctx, HSPMN_DTYPE_F32, {15});
    EXPECT_STATUS(hspmn_sample(ctx, flat, ok.data(), r.tokens), HSPMN_ERR_SHAPE, "logits: expected shape [n, V]");
    hspmn_tensor* wide = make(ctx, HSPMN_DTYPE_F32, {1, 65537});
    EXPECT_STATUS(hspmn_sample(ctx, wide, ok.data(), r.tokens), HSPMN_ERR_SHAPE, "V <= 65536");
    hspmn_tensor* tf = make(ctx, HSPMN_DTYPE_F32, {3});
    EXPECT_STATUS(hspmn_sample(ctx, r.logits, ok.data(), tf), HSPMN_ERR_DTYPE, "tokens: expected dtype i32");
    hspmn_tensor* t4 = make(ctx, HSPMN_DTYPE_I32, {4});
    EXPECT_STATUS(hspmn_sample(ctx, r.logits, ok.data(), t4), HSPMN_ERR_SHAPE, "tokens: expected shape [3]");
    hspmn_tensor* t31 = make(ctx, HSPMN_DTYPE_I32, {3, 1});
    EXPECT_STATUS(hspmn_sample(ctx, r.logits, ok.data(), t31), HSPMN_ERR_SHAPE, "tokens: expected shape [3]");
    hspmn_context* other = make_ctx(1);
    hspmn_tensor* foreign = make(other, HSPMN_DTYPE_I32, {3});
    EXPECT_STATUS(hspmn_sample(ctx, r.logits, ok.data(), foreign), HSPMN_ERR_INVALID_ARGUMENT, "another context");
    for (hspmn_tensor* t : {bf, flat, wide, tf, t4, t31}) OK(hspmn_tensor_destroy(t));
    OK(hspmn_tensor_destroy(foreign));
    OK(hspmn_context_destroy(other));

    struct Bad {
        hspmn_sampling_params p;
        const char* fragment;
    };
    hspmn_sampling_params reserved = params(1.0f, 0, 1.0f, 1, 1);
    reserved.reserved = 1;
    const Bad bad[] = {
        {params(-0.5f, 0, 1.0f, 1, 1), "params[2].temperature (-0.5) must be 0 (greedy) or in [2^-126, 100]"},
        {params(NAN, 0, 1.0f, 1, 1), "params[2].temperature"},
        {params(INFINITY, 0, 1.0f, 1, 1), "params[2].temperature"},
        {params(100.5f, 0, 1.0f, 1, 1), "params[2].temperature"},
        {params(1e-40f, 0, 1.0f, 1, 1), "params[2].temperature"},  // subnormal: 1/T would be +inf
        {params(1.0f, -1, 1.0f, 1, 1), "params[2].top_k (-1) must be >= 0"},
        {params(1.0f, 0, 0.0f, 1, 1), "params[2].top_p (0) must be in (0, 1]"},
        {params(1.0f, 0, 1.01f, 1, 1), "params[2].top_p"},
        {params(1.0f, 0, NAN, 1, 1), "params[2].top_p"},
        {reserved, "params[2].reserved (1) must be 0"},
        {params(1.0f, 0, 1.0f, 1, 0), "params[2].draw (0) must be >= 1"},
    };
    for (const Bad& b : bad) {
        std::vector<hspmn_sampling_params> ps = ok;
        ps[2] = b.p;
        EXPECT_STATUS(r.run(ps), HSPMN_ERR_INVALID_ARGUMENT, b.fragment);
    }
    // greedy ignores the draw; the smallest normal temperature and 100 are in range
    std::vector<hspmn_sampling_params> edge = {params(0.0f, 0, 1.0f, 1, 0), params(1.17549435e-38f, 0, 1.0f, 1, 1),
                                               params(100.0f, 7, 1e-30f, 1, INT64_MAX)};
    OK(r.run(edge));
}

void test_bad_rows(hspmn_context* ctx) {
    const int64_t n = 6, V = 9;
    std::vector<float> x(n * V);
    for (int64_t i = 0; i < n * V; ++i) x[i] = static_cast<float>(i % V % 7) * 0.25f;
    for (int64_t j = 0; j < V; ++j) x[4 * V + j] = -INFINITY;  // row 4: only -inf
    x[2 * V + 5] = NAN;                                        // row 2: NaN
    x[5 * V + 1] = INFINITY;                                   // row 5: +inf
    x[1 * V + 3] = -INFINITY;                                  // row 1: one -inf entry is fine
    Rows r(ctx, x, n, V);
    std::vector<hspmn_sampling_params> ps(n, params(0.0f, 0, 1.0f, 0, 1));
    EXPECT_STATUS(r.run(ps), HSPMN_ERR_NON_FINITE, "logits row 2 holds NaN");
    std::vector<int32_t> t = r.out();
    EXPECT(t[2] == -1 && t[4] == -3 && t[5] == -2);
    EXPECT(t[0] == 6 && t[1] == 6 && t[3] == 6);  // greedy: the first 1.5 of each row
    // the same for sampling, and under HSPMN_NAN_PROPAGATE (a token cannot carry NaN on)
    hspmn_context* prop = make_ctx(2, HSPMN_NAN_PROPAGATE);
    {
        Rows q(prop, x, n, V);
        std::vector<hspmn_sampling_params> sp(n, params(1.0f, 3, 0.9f, 5, 1));
        EXPECT_STATUS(q.run(sp), HSPMN_ERR_NON_FINITE, "logits row 2 holds NaN");
        std::vector<float> only(x.begin() + 4 * V, x.begin() + 6 * V);
        Rows o(prop, only, 2, V);
        EXPECT_STATUS(o.run({sp[0], sp[0]}), HSPMN_ERR_NON_FINITE, "every logit of row 0 is -Inf");
        std::vector<float> plus(x.begin() + 5 * V, x.begin() + 6 * V);
        Rows pl(prop, plus, 1, V);
        EXPECT_STATUS(pl.run({sp[0]}), HSPMN_ERR_NON_FINITE, "logits row 0 holds +Inf");
    }
    OK(hspmn_context_destroy(prop));
}

// Tokens of the definition computed by native/reference/sampling_ref.py; SamplerTest pins the same ones.
void test_pinned(hspmn_context* ctx) {
    // float32(ln 0.1), ..., float32(ln 0.4)
    const std::vector<float> probs = {-2.3025851249694824f, -1.6094379425048828f, -1.2039728164672852f,
                                      -0.9162907600402832f};
    const std::vector<float> row = {0.5f, -1.0f, 2.0f, 2.0f, 0.25f, -INFINITY, 1.75f, 0.0f};
    struct Pin {
        const std::vector<float>* x;
        hspmn_sampling_params p;
        std::vector<int32_t> want;
    };
    const Pin pins[] = {
        {&probs, params(1.0f, 0, 1.0f, 12345, 0), {1, 1, 1, 1, 2, 2, 1, 2, 2, 3, 1, 2}},
        {&row, params(0.8f, 3, 1.0f, 42, 0), {6, 2, 2, 2, 2, 6, 2, 6, 2, 3, 2, 3}},
        {&row, params(1.5f, 0, 0.6f, 42, 0), {6, 2, 2, 2, 2, 6, 2, 6, 2, 3, 2, 3}},
        {&row, params(2.0f, 5, 0.9f, 7, 0), {2, 0, 6, 3, 3, 2, 3, 2, 2, 3, 0, 6}},
    };
    for (const Pin& pin : pins) {
        std::vector<int32_t> got = draws(ctx, *pin.x, pin.p, 12);
        EXPECT(got == pin.want);
        if (got != pin.want) {
            std::fprintf(stderr, "  pinned T=%g k=%d p=%g: got", static_cast<double>(pin.p.temperature), pin.p.top_k,
                         static_cast<double>(pin.p.top_p));
            for (int32_t v : got) std::fprintf(stderr, " %d", v);
            std::fprintf(stderr, "\n");
        }
    }
}

void test_ties_and_kept_sets(hspmn_context* ctx) {
    // greedy and top-1 pick the lowest id of the maximum; -0 equals +0
    const std::vector<float> tie = {0.0f, 3.0f, 1.0f, 3.0f};
    EXPECT(draws(ctx, tie, params(0.0f, 0, 1.0f, 0, 0), 1)[0] == 1);
    for (int32_t t : draws(ctx, tie, params(1.0f, 1, 1.0f, 9, 0), 50)) EXPECT(t == 1);
    for (int32_t t : draws(ctx, tie, params(1.0f, 0, 1e-6f, 9, 0), 50)) EXPECT(t == 1);
    const std::vector<float> zeros = {-1.0f, 0.0f, -0.0f, 0.0f};  // +0 at id 1, -0 at id 2
    const std::vector<float> zeros2 = {-1.0f, -0.0f, 0.0f, -1.0f};
    EXPECT(draws(ctx, zeros2, params(0.0f, 0, 1.0f, 0, 0), 1)[0] == 1);
    for (int32_t t : draws(ctx, zeros2, params(1.0f, 1, 1.0f, 3, 0), 30)) EXPECT(t == 1);
    int seen[4] = {0, 0, 0, 0};
    for (int32_t t : draws(ctx, zeros, params(1.0f, 2, 1.0f, 3, 0), 400)) ++seen[t];
    EXPECT(seen[0] == 0 && seen[3] == 0 && seen[1] > 100 && seen[2] > 100);  // ids 1 and 2 tie, id 3 is cut

    // top-k keeps the k largest logits; -inf entries are never drawn; one finite logit is drawn always
    std::mt19937 gen(4);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> row(300);
    for (float& v : row) v = nd(gen);
    for (int i = 0; i < 300; i += 3) row[i] = -INFINITY;
    std::vector<float> sorted = row;
    std::sort(sorted.begin(), sorted.end(), std::greater<float>());
    for (int32_t t : draws(ctx, row, params(1.0f, 10, 1.0f, 77, 0), 500)) EXPECT(row[t] >= sorted[9] && t % 3 != 0);
    for (int32_t t : draws(ctx, row, params(100.0f, 0, 1.0f, 78, 0), 500)) EXPECT(t % 3 != 0);
    std::vector<float> one(300, -INFINITY);
    one[123] = -5.0f;
    for (int32_t t : draws(ctx, one, params(0.7f, 0, 0.5f, 1, 0), 20)) EXPECT(t == 123);
    std::vector<float> single = {2.5f};
    for (int32_t t : draws(ctx, single, params(1.0f, 0, 1.0f, 1, 0), 5)) EXPECT(t == 0);

    // repeatable, and the draw index moves the stream
    std::vector<int32_t> a = draws(ctx, row, params(0.9f, 40, 0.95f, 5, 0), 200);
    std::vector<int32_t> b = draws(ctx, row, params(0.9f, 40, 0.95f, 5, 0), 200);
    std::vector<int32_t> c = draws(ctx, row, params(0.9f, 40, 0.95f, 6, 0), 200);
    EXPECT(a == b && a != c);
}

void test_no_allocation_when_warm(hspmn_context* ctx) {
    std::vector<float> x(4 * 1000, 0.0f);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 37) % 101) * 0.01f;
    Rows r(ctx, x, 4, 1000);
    std::vector<hspmn_sampling_params> ps(4, params(0.8f, 50, 0.9f, 1, 3));
    OK(r.run(ps));  // sizes the op's scratch
    hspmn_alloc_stats before{}, after{};
    OK(hspmn_alloc_stats_get(&before));
    OK(r.run(ps));
    OK(hspmn_alloc_stats_get(&after));
    EXPECT(after.live_bytes == before.live_bytes);
}

}  // namespace

int main() {
    hspmn_context* ctx = make_ctx(2);
    test_defaults();
    test_bad_arguments(ctx);
    test_bad_rows(ctx);
    test_pinned(ctx);
    test_ties_and_kept_sets(ctx);
    test_no_allocation_when_warm(ctx);
    OK(hspmn_context_destroy(ctx));
    return report();
}
