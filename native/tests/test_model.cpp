// ABI-level tests of the language model (hspmn.h "language model"): argument checks and their
// messages, state errors, parameter order, gradient accumulation, thread-count invariance of a whole
// training step (what bitwise resume rests on), skipped steps. Numerical parity with the PyTorch
// reference is ../reference/check_model.py.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "abi_check.h"
#include "hspmn.h"

static hspmn_model_params small_model() { return model_params(61, 2, 32, 4, 2, 2); }

static std::vector<float> read_f32(hspmn_tensor* t) { return read_values<float>(t); }

// A small_model() made with `seed` on its own CPU context; both destroyed with the fixture.
struct ModelFixture {
    hspmn_context* ctx;
    hspmn_model_params p = small_model();
    hspmn_model* m = nullptr;
    explicit ModelFixture(uint64_t seed, int threads = 2, int nan_policy = HSPMN_NAN_REJECT)
        : ctx(make_ctx(threads, nan_policy)) {
        OK(hspmn_model_create(ctx, &p, seed, &m));
    }
    ~ModelFixture() {
        OK(hspmn_model_destroy(m));
        OK(hspmn_context_destroy(ctx));
    }
};

// A training forward of tok -> tgt (default params otherwise) and its backward.
static void forward_backward(hspmn_model* m, hspmn_tensor* tok, hspmn_tensor* tgt) {
    hspmn_model_forward_params fp = hspmn_model_forward_default_params();
    fp.training = 1;
    OK(hspmn_model_forward(m, &fp, tok, tgt, nullptr, nullptr));
    hspmn_model_backward_params bp = hspmn_model_backward_default_params();
    OK(hspmn_model_backward(m, &bp));
}

// Every parameter's values (which = 0), gradients (1) or AdamW m (2), concatenated in state_dict order.
static std::vector<float> dump(hspmn_context* ctx, hspmn_model* m, int which) {
    int32_t n = 0;
    OK(hspmn_model_param_count(m, &n));
    std::vector<float> all;
    for (int i = 0; i < n; ++i) {
        const char* name = nullptr;
        OK(hspmn_model_param_name(m, i, &name));
        hspmn_tensor_desc d;
        OK(hspmn_model_param_describe(m, name, &d));
        std::vector<int64_t> shape(d.shape, d.shape + d.ndim);
        hspmn_tensor* t = make(ctx, HSPMN_DTYPE_F32, shape);
        if (which == 0) OK(hspmn_model_get_param(m, name, t));
        if (which == 1) OK(hspmn_model_get_grad(m, name, t));
        if (which == 2) OK(hspmn_model_get_moment(m, name, 0, t));
        std::vector<float> v = read_f32(t);
        all.insert(all.end(), v.begin(), v.end());
        OK(hspmn_tensor_destroy(t));
    }
    return all;
}

static void test_params_and_names() {
    hspmn_model_params p = small_model();
    OK(hspmn_model_params_validate(&p));
    p.vocab_size = 1;
    EXPECT_STATUS(hspmn_model_params_validate(&p), HSPMN_ERR_INVALID_ARGUMENT, "vocab_size (1)");
    p = small_model();
    p.num_layers = 0;
    EXPECT_STATUS(hspmn_model_params_validate(&p), HSPMN_ERR_INVALID_ARGUMENT, "num_layers (0)");
    p = small_model();
    p.block.num_heads = 5;
    EXPECT_STATUS(hspmn_model_params_validate(&p), HSPMN_ERR_INVALID_ARGUMENT, "block.");
    EXPECT(hspmn_model_default_params().block.routing == HSPMN_ROUTING_THRESHOLD);

    hspmn_context* ctx = make_ctx(2);
    hspmn_model* m = nullptr;
    p = small_model();
    OK(hspmn_model_create(ctx, &p, 1, &m));
    int32_t n = 0;
    OK(hspmn_model_param_count(m, &n));
    EXPECT(n == 2 + 13 * p.num_layers);
    const char* name = nullptr;
    OK(hspmn_model_param_name(m, 0, &name));
    EXPECT(std::string(name) == "embedding");
    OK(hspmn_model_param_name(m, 1, &name));
    EXPECT(std::string(name) == "blocks.0.router.w");
    OK(hspmn_model_param_name(m, 14, &name));
    EXPECT(std::string(name) == "blocks.1.router.w");
    OK(hspmn_model_param_name(m, n - 1, &name));
    EXPECT(std::string(name) == "norm");
    EXPECT_STATUS(hspmn_model_param_name(m, n, &name), HSPMN_ERR_INVALID_ARGUMENT, "index");
    hspmn_tensor_desc d;
    OK(hspmn_model_param_describe(m, "embedding", &d));
    EXPECT(d.ndim == 2 && d.shape[0] == 61 && d.shape[1] == 32 && d.dtype == HSPMN_DTYPE_F32);
    OK(hspmn_model_param_describe(m, "blocks.1.attn.k", &d));
    EXPECT(d.ndim == 2 && d.shape[0] == 16 && d.shape[1] == 32);
    EXPECT_STATUS(hspmn_model_param_describe(m, "blocks.2.attn.k", &d), HSPMN_ERR_NOT_FOUND, "blocks.{0..1}");

    // set/get: f32 exact, bf16 widened; NaN rejected under REJECT; v must be >= 0.
    hspmn_tensor* w = make(ctx, HSPMN_DTYPE_F32, {32});
    std::vector<float> vals(32);
    for (int i = 0; i < 32; ++i) vals[i] = 1.0f + 1e-4f * static_cast<float>(i);  // not bf16-representable
    OK(hspmn_tensor_copy_in(w, vals.data(), 32 * 4));
    OK(hspmn_model_set_param(m, "norm", w));
    hspmn_tensor* back = make(ctx, HSPMN_DTYPE_F32, {32});
    OK(hspmn_model_get_param(m, "norm", back));
    EXPECT(read_f32(back) == vals);
    vals[3] = NAN;
    OK(hspmn_tensor_copy_in(w, vals.data(), 32 * 4));
    EXPECT_STATUS(hspmn_model_set_param(m, "norm", w), HSPMN_ERR_NON_FINITE, "src");
    vals[3] = -1.0f;
    OK(hspmn_tensor_copy_in(w, vals.data(), 32 * 4));
    EXPECT_STATUS(hspmn_model_set_moment(m, "norm", 1, w), HSPMN_ERR_INVALID_ARGUMENT, "never negative");
    OK(hspmn_model_set_moment(m, "norm", 0, w));
    EXPECT_STATUS(hspmn_model_set_moment(m, "norm", 2, w), HSPMN_ERR_INVALID_ARGUMENT, "which");
    hspmn_tensor* wrong = make(ctx, HSPMN_DTYPE_F32, {31});
    EXPECT_STATUS(hspmn_model_set_param(m, "norm", wrong), HSPMN_ERR_SHAPE, "src");
    hspmn_tensor* bf = make(ctx, HSPMN_DTYPE_BF16, {32});
    EXPECT_STATUS(hspmn_model_get_moment(m, "norm", 0, bf), HSPMN_ERR_DTYPE, "f32");
    EXPECT_STATUS(hspmn_context_destroy(ctx), HSPMN_ERR_STATE, "1 model(s)");
    for (hspmn_tensor* t : {w, back, wrong, bf}) OK(hspmn_tensor_destroy(t));
    OK(hspmn_model_destroy(m));
    OK(hspmn_context_destroy(ctx));
}

static void test_forward_checks() {
    ModelFixture f(3);
    hspmn_context* ctx = f.ctx;
    hspmn_model* m = f.m;
    hspmn_tensor* tok = make(ctx, HSPMN_DTYPE_I32, {2, 9});
    hspmn_tensor* tgt = make(ctx, HSPMN_DTYPE_I32, {2, 9});
    hspmn_tensor* tgt_bad = make(ctx, HSPMN_DTYPE_I32, {2, 8});
    hspmn_tensor* loss = make(ctx, HSPMN_DTYPE_F32, {2});
    hspmn_tensor* stats = make(ctx, HSPMN_DTYPE_F32, {2, 2});
    hspmn_tensor* stats_bad = make(ctx, HSPMN_DTYPE_F32, {3, 2});
    fill_tokens(tok, 61, 0);
    fill_tokens(tgt, 61, 1);
    hspmn_model_forward_params fp = hspmn_model_forward_default_params();
    hspmn_model_backward_params bp = hspmn_model_backward_default_params();
    EXPECT_STATUS(hspmn_model_backward(m, &bp), HSPMN_ERR_STATE, "no training forward");
    fp.training = 1;
    EXPECT_STATUS(hspmn_model_forward(m, &fp, tok, nullptr, nullptr, nullptr), HSPMN_ERR_INVALID_ARGUMENT,
                  "targets is NULL");
    fp.training = 0;
    EXPECT_STATUS(hspmn_model_forward(m, &fp, tok, nullptr, loss, nullptr), HSPMN_ERR_INVALID_ARGUMENT,
                  "loss is requested");
    EXPECT_STATUS(hspmn_model_forward(m, &fp, tok, tgt_bad, loss, nullptr), HSPMN_ERR_SHAPE, "targets");
    EXPECT_STATUS(hspmn_model_forward(m, &fp, tok, tgt, loss, stats_bad), HSPMN_ERR_SHAPE, "stats");
    fp.aux_target = NAN;
    EXPECT_STATUS(hspmn_model_forward(m, &fp, tok, tgt, loss, stats), HSPMN_ERR_INVALID_ARGUMENT, "aux_target");
    fp.aux_target = -1.0f;
    EXPECT(fp.dropout == 0.0f);
    fp.dropout = 1.0f;
    EXPECT_STATUS(hspmn_model_forward(m, &fp, tok, tgt, loss, stats), HSPMN_ERR_INVALID_ARGUMENT,
                  "params.dropout (1) must be in [0, 1)");
    fp.dropout = NAN;
    EXPECT_STATUS(hspmn_model_forward(m, &fp, tok, tgt, loss, stats), HSPMN_ERR_INVALID_ARGUMENT, "params.dropout");
    fp.dropout = 0.0f;
    EXPECT(fp.row_offset == 0);
    fp.row_offset = -3;
    EXPECT_STATUS(hspmn_model_forward(m, &fp, tok, tgt, loss, stats), HSPMN_ERR_INVALID_ARGUMENT,
                  "params.row_offset (-3) must be >= 0");
    fp.row_offset = 0;
    std::vector<int32_t> ids(18, 5);
    ids[11] = 61;
    hspmn_tensor* tok_bad = make(ctx, HSPMN_DTYPE_I32, {2, 9});
    OK(hspmn_tensor_copy_in(tok_bad, ids.data(), 18 * 4));
    EXPECT_STATUS(hspmn_model_forward(m, &fp, tok_bad, tgt, loss, stats), HSPMN_ERR_INVALID_ARGUMENT,
                  "tokens[1, 2] = 61 is not a token id in [0, 61)");
    ids[11] = -3;
    OK(hspmn_tensor_copy_in(tok_bad, ids.data(), 18 * 4));
    EXPECT_STATUS(hspmn_model_forward(m, &fp, tgt, tok_bad, loss, stats), HSPMN_ERR_INVALID_ARGUMENT, "targets[1, 2]");

    // Initial loss near ln V (embedding U(+-1/sqrt D)); routed fraction in [0, 1].
    OK(hspmn_model_forward(m, &fp, tok, tgt, loss, stats));
    std::vector<float> l = read_f32(loss), s = read_f32(stats);
    EXPECT(std::fabs(l[1] - std::log(61.0f)) < 0.5f);
    EXPECT(l[0] >= l[1]);
    EXPECT(s[1] >= 0.0f && s[1] <= 1.0f && s[3] >= 0.0f && s[3] <= 1.0f);
    // An inference forward leaves nothing to differentiate.
    EXPECT_STATUS(hspmn_model_backward(m, &bp), HSPMN_ERR_STATE, "no training forward");

    hspmn_tensor* logits = make(ctx, HSPMN_DTYPE_F32, {2, 61});
    hspmn_tensor* logits_bad = make(ctx, HSPMN_DTYPE_F32, {2, 60});
    OK(hspmn_model_logits(m, tok, logits));
    EXPECT_STATUS(hspmn_model_logits(m, tok, logits_bad), HSPMN_ERR_SHAPE, "logits");

    hspmn_adamw_params ap = hspmn_adamw_default_params();
    hspmn_adamw_result ar;
    ap.step = 0;
    EXPECT_STATUS(hspmn_model_adamw_step(m, &ap, &ar), HSPMN_ERR_INVALID_ARGUMENT, "params.step");
    ap = hspmn_adamw_default_params();
    ap.beta2 = 1.0f;
    EXPECT_STATUS(hspmn_model_adamw_step(m, &ap, &ar), HSPMN_ERR_INVALID_ARGUMENT, "beta2");
    for (hspmn_tensor* t : {tok, tgt, tgt_bad, loss, stats, stats_bad, tok_bad, logits, logits_bad})
        OK(hspmn_tensor_destroy(t));
}

// Runs two micro-batches with accumulation and one AdamW step; returns {loss log, weights, m}.
struct StepResult {
    std::vector<float> losses, weights, grads, moments;
};

// recompute: 0 never, 1 every training forward, 2 on every other micro-step (modes switch mid-run).
static StepResult train_steps(int threads, int steps, float scale_mode, float dropout = 0.0f, int recompute = 0) {
    ModelFixture f(11, threads);
    hspmn_context* ctx = f.ctx;
    hspmn_model* m = f.m;
    hspmn_tensor* tok = make(ctx, HSPMN_DTYPE_I32, {2, 23});
    hspmn_tensor* tgt = make(ctx, HSPMN_DTYPE_I32, {2, 23});
    hspmn_tensor* loss = make(ctx, HSPMN_DTYPE_F32, {2});
    StepResult r;
    for (int step = 0; step < steps; ++step) {
        for (int micro = 0; micro < 2; ++micro) {
            fill_tokens(tok, 61, step * 2 + micro);
            fill_tokens(tgt, 61, step * 2 + micro + 1);
            hspmn_model_forward_params fp = hspmn_model_forward_default_params();
            fp.training = 1;
            fp.seed = 5;
            fp.step = step * 2 + micro;
            fp.dropout = dropout;
            fp.recompute = recompute == 1 || (recompute == 2 && (step * 2 + micro) % 2 == 1);
            OK(hspmn_model_forward(m, &fp, tok, tgt, loss, nullptr));
            r.losses.push_back(read_f32(loss)[0]);
            hspmn_model_backward_params bp = hspmn_model_backward_default_params();
            bp.loss_scale = scale_mode;
            bp.accumulate = micro > 0;
            OK(hspmn_model_backward(m, &bp));
            if (recompute == 1 && micro == 0) {  // a repeated backward re-runs the forwards again
                std::vector<float> g = dump(ctx, m, 1);
                OK(hspmn_model_backward(m, &bp));
                EXPECT(dump(ctx, m, 1) == g);
            }
        }
        r.grads = dump(ctx, m, 1);
        hspmn_adamw_params ap = hspmn_adamw_default_params();
        ap.step = step + 1;
        ap.lr = 1e-3f;
        hspmn_adamw_result ar;
        OK(hspmn_model_adamw_step(m, &ap, &ar));
        EXPECT(ar.applied == 1 && std::isfinite(ar.grad_norm) && ar.grad_norm > 0.0f);
    }
    r.weights = dump(ctx, m, 0);
    r.moments = dump(ctx, m, 2);
    for (hspmn_tensor* t : {tok, tgt, loss}) OK(hspmn_tensor_destroy(t));
    return r;
}

// Bitwise resume needs a step that does not depend on the thread count.
static void test_thread_count_invariance() {
    StepResult a = train_steps(1, 3, 0.5f), b = train_steps(3, 3, 0.5f);
    EXPECT(a.losses == b.losses);
    EXPECT(a.weights == b.weights);
    EXPECT(a.moments == b.moments);
    EXPECT(a.weights != train_steps(1, 2, 0.5f).weights);  // the steps did something
    // Residual dropout's masks are a function of (seed, step, layer, b, s, d) only: any thread split
    // draws the same, and they change the run.
    StepResult c = train_steps(1, 3, 0.5f, 0.25f), d = train_steps(3, 3, 0.5f, 0.25f);
    EXPECT(c.losses == d.losses);
    EXPECT(c.weights == d.weights);
    EXPECT(c.moments == d.moments);
    EXPECT(c.losses != a.losses && c.weights != a.weights);
}

// Recomputation re-runs each layer's forward right before its backward with the forward's own noise
// and dropout keys: the same losses, gradients, weights and moments bit for bit (noise and dropout
// on), also when the mode switches between micro-steps. recompute needs training and is 0 or 1.
static void test_recompute() {
    StepResult a = train_steps(2, 3, 0.5f, 0.25f), b = train_steps(2, 3, 0.5f, 0.25f, 1),
               c = train_steps(2, 3, 0.5f, 0.25f, 2);
    for (const StepResult* r : {&b, &c}) {
        EXPECT(r->losses == a.losses);
        EXPECT(r->grads == a.grads);
        EXPECT(r->weights == a.weights);
        EXPECT(r->moments == a.moments);
    }
    ModelFixture f(3);
    hspmn_tensor* tok = make(f.ctx, HSPMN_DTYPE_I32, {1, 8});
    hspmn_tensor* tgt = make(f.ctx, HSPMN_DTYPE_I32, {1, 8});
    fill_tokens(tok, 61, 0);
    fill_tokens(tgt, 61, 1);
    hspmn_model_forward_params fp = hspmn_model_forward_default_params();
    // What a training forward leaves held on a fresh model: the row buffers and every layer's
    // activations, or the row buffers, the layers' inputs and no activations.
    int64_t held[2];
    for (int r = 0; r < 2; ++r) {
        ModelFixture g(3);
        hspmn_tensor* gtok = make(g.ctx, HSPMN_DTYPE_I32, {1, 8});
        hspmn_tensor* gtgt = make(g.ctx, HSPMN_DTYPE_I32, {1, 8});
        fill_tokens(gtok, 61, 0);
        fill_tokens(gtgt, 61, 1);
        hspmn_alloc_stats s0, s1;
        OK(hspmn_alloc_stats_get(&s0));
        fp.training = 1;
        fp.recompute = r;
        OK(hspmn_model_forward(g.m, &fp, gtok, gtgt, nullptr, nullptr));
        OK(hspmn_alloc_stats_get(&s1));
        held[r] = s1.live_bytes - s0.live_bytes;
        for (hspmn_tensor* t : {gtok, gtgt}) OK(hspmn_tensor_destroy(t));
    }
    fp.training = 0;
    std::printf("recompute: a training forward holds %lld bytes, with recompute %lld\n", static_cast<long long>(held[0]),
                static_cast<long long>(held[1]));
    EXPECT(held[0] > 0 && held[1] > 0 && held[1] < held[0] / 2);
    fp.recompute = 1;
    EXPECT_STATUS(hspmn_model_forward(f.m, &fp, tok, tgt, nullptr, nullptr), HSPMN_ERR_INVALID_ARGUMENT,
                  "params.recompute is 1 but params.training is 0");
    fp.training = 1;
    fp.recompute = 2;
    EXPECT_STATUS(hspmn_model_forward(f.m, &fp, tok, tgt, nullptr, nullptr), HSPMN_ERR_INVALID_ARGUMENT,
                  "params.recompute (2) must be 0 or 1");
    for (hspmn_tensor* t : {tok, tgt}) OK(hspmn_tensor_destroy(t));
}

// Halving loss_scale halves every gradient exactly (powers of two commute with rounding).
static void test_loss_scale() {
    StepResult half = train_steps(2, 1, 0.5f), quarter = train_steps(2, 1, 0.25f);
    EXPECT(half.grads.size() == quarter.grads.size());
    bool exact = true;
    for (size_t i = 0; i < half.grads.size(); ++i) exact = exact && half.grads[i] == 2.0f * quarter.grads[i];
    EXPECT(exact);
}

// A non-finite gradient norm skips the step and changes nothing.
static void test_skipped_step() {
    ModelFixture f(2, 2, HSPMN_NAN_PROPAGATE);
    hspmn_context* ctx = f.ctx;
    hspmn_model* m = f.m;
    hspmn_tensor* w = make(ctx, HSPMN_DTYPE_F32, {32});
    std::vector<float> vals(32, 1.0f);
    vals[0] = INFINITY;
    OK(hspmn_tensor_copy_in(w, vals.data(), 32 * 4));
    OK(hspmn_model_set_param(m, "norm", w));
    std::vector<float> before = dump(ctx, m, 0);
    hspmn_tensor* tok = make(ctx, HSPMN_DTYPE_I32, {1, 8});
    hspmn_tensor* tgt = make(ctx, HSPMN_DTYPE_I32, {1, 8});
    fill_tokens(tok, 61, 0);
    fill_tokens(tgt, 61, 1);
    forward_backward(m, tok, tgt);
    hspmn_adamw_params ap = hspmn_adamw_default_params();
    hspmn_adamw_result ar;
    OK(hspmn_model_adamw_step(m, &ap, &ar));
    EXPECT(ar.applied == 0 && !std::isfinite(ar.grad_norm));
    std::vector<float> after = dump(ctx, m, 0);
    EXPECT(std::memcmp(before.data(), after.data(), before.size() * 4) == 0);
    for (hspmn_tensor* t : {w, tok, tgt}) OK(hspmn_tensor_destroy(t));
}

// The cache stays until the next forward: a second backward gives the same gradients.
static void test_repeat_backward() {
    ModelFixture f(4);
    hspmn_tensor* tok = make(f.ctx, HSPMN_DTYPE_I32, {2, 19});
    hspmn_tensor* tgt = make(f.ctx, HSPMN_DTYPE_I32, {2, 19});
    fill_tokens(tok, 61, 2);
    fill_tokens(tgt, 61, 3);
    forward_backward(f.m, tok, tgt);
    std::vector<float> first = dump(f.ctx, f.m, 1);
    hspmn_model_backward_params bp = hspmn_model_backward_default_params();
    OK(hspmn_model_backward(f.m, &bp));
    EXPECT(dump(f.ctx, f.m, 1) == first);
    for (hspmn_tensor* t : {tok, tgt}) OK(hspmn_tensor_destroy(t));
}

static std::vector<float> full_logits(hspmn_context* ctx, hspmn_model* m, const std::vector<int32_t>& seq, int V) {
    hspmn_tensor* t = make(ctx, HSPMN_DTYPE_I32, {1, static_cast<int64_t>(seq.size())});
    hspmn_tensor* lg = make(ctx, HSPMN_DTYPE_F32, {1, V});
    OK(hspmn_tensor_copy_in(t, seq.data(), static_cast<int64_t>(seq.size()) * 4));
    OK(hspmn_model_logits(m, t, lg));
    std::vector<float> v = read_f32(lg);
    OK(hspmn_tensor_destroy(t));
    OK(hspmn_tensor_destroy(lg));
    return v;
}

static int argmax(const float* v, int n) {
    int best = 0;
    for (int i = 1; i < n; ++i)
        if (v[i] > v[best]) best = i;
    return best;
}

// Cached decoding: prefill + greedy steps of two slots of different lengths in one call equal the full
// forward's logits bit for bit on the CPU (same ops, same order), with routing mixed.
static void test_decoder() {
    hspmn_context* ctx = make_ctx(2);
    hspmn_model_params p = small_model();
    const int V = p.vocab_size, L = p.num_layers;
    hspmn_model* m = nullptr;
    OK(hspmn_model_create(ctx, &p, 8, &m));
    hspmn_tensor* b = make(ctx, HSPMN_DTYPE_F32, {1});
    const float bias = 0.0f;  // about half the tokens routed at this init
    OK(hspmn_tensor_copy_in(b, &bias, 4));
    for (const char* n : {"blocks.0.router.b", "blocks.1.router.b"}) OK(hspmn_model_set_param(m, n, b));
    hspmn_decoder* dec = nullptr;
    OK(hspmn_decoder_create(m, 3, 40, &dec));
    EXPECT_STATUS(hspmn_model_destroy(m), HSPMN_ERR_STATE, "decoder");

    std::vector<std::vector<int32_t>> seqs = {{3, 14, 15, 9, 2}, {6, 5, 35, 8, 9, 7, 9, 3, 2}};
    const int32_t slot_of[2] = {2, 0};
    int routed_total = 0, routed_count = 0;
    bool exact = true, greedy = true;
    for (int j = 0; j < 2; ++j) {
        const int64_t T = static_cast<int64_t>(seqs[j].size());
        hspmn_tensor* s = make(ctx, HSPMN_DTYPE_I32, {1});
        hspmn_tensor* tk = make(ctx, HSPMN_DTYPE_I32, {1, T});
        hspmn_tensor* lg = make(ctx, HSPMN_DTYPE_F32, {1, V});
        hspmn_tensor* rt = make(ctx, HSPMN_DTYPE_I32, {1, T, L});
        OK(hspmn_tensor_copy_in(s, &slot_of[j], 4));
        OK(hspmn_tensor_copy_in(tk, seqs[j].data(), T * 4));
        OK(hspmn_decoder_append(dec, s, tk, lg, rt));
        exact = exact && read_f32(lg) == full_logits(ctx, m, seqs[j], V);
        std::vector<int32_t> r(static_cast<size_t>(T * L));
        OK(hspmn_tensor_copy_out(rt, r.data(), T * L * 4));
        for (int32_t x : r) {
            routed_total += x;
            ++routed_count;
        }
        for (hspmn_tensor* t : {s, tk, lg, rt}) OK(hspmn_tensor_destroy(t));
    }
    EXPECT(routed_total > 0 && routed_total < routed_count);  // the check covers both paths
    hspmn_tensor* s2 = make(ctx, HSPMN_DTYPE_I32, {2});
    hspmn_tensor* tk2 = make(ctx, HSPMN_DTYPE_I32, {2, 1});
    hspmn_tensor* lg2 = make(ctx, HSPMN_DTYPE_F32, {2, V});
    OK(hspmn_tensor_copy_in(s2, slot_of, 8));
    for (int step = 0; step < 12; ++step) {
        int32_t next[2];
        for (int j = 0; j < 2; ++j) {
            std::vector<float> f = full_logits(ctx, m, seqs[j], V);
            next[j] = argmax(f.data(), V);
            seqs[j].push_back(next[j]);
        }
        OK(hspmn_tensor_copy_in(tk2, next, 8));
        OK(hspmn_decoder_append(dec, s2, tk2, lg2, nullptr));
        std::vector<float> got = read_f32(lg2);
        for (int j = 0; j < 2; ++j) {
            std::vector<float> want = full_logits(ctx, m, seqs[j], V);
            exact = exact && std::equal(want.begin(), want.end(), got.begin() + j * V);
            greedy = greedy && argmax(got.data() + j * V, V) == argmax(want.data(), V);
        }
    }
    EXPECT(exact);
    EXPECT(greedy);
    int64_t len = 0;
    OK(hspmn_decoder_length(dec, 0, &len));
    EXPECT(len == 9 + 12);

    // Bad calls: duplicate slot, slot out of range, max_len overflow, bad token; a reset slot restarts.
    int32_t dup[2] = {1, 1};
    OK(hspmn_tensor_copy_in(s2, dup, 8));
    EXPECT_STATUS(hspmn_decoder_append(dec, s2, tk2, lg2, nullptr), HSPMN_ERR_INVALID_ARGUMENT, "appears twice");
    int32_t far[2] = {1, 3};
    OK(hspmn_tensor_copy_in(s2, far, 8));
    EXPECT_STATUS(hspmn_decoder_append(dec, s2, tk2, lg2, nullptr), HSPMN_ERR_INVALID_ARGUMENT, "slots[1] = 3");
    hspmn_tensor* s1 = make(ctx, HSPMN_DTYPE_I32, {1});
    hspmn_tensor* tk20 = make(ctx, HSPMN_DTYPE_I32, {1, 20});
    const int32_t zero = 0;
    OK(hspmn_tensor_copy_in(s1, &zero, 4));
    EXPECT_STATUS(hspmn_decoder_append(dec, s1, tk20, nullptr, nullptr), HSPMN_ERR_INVALID_ARGUMENT, "exceed max_len 40");
    int32_t bad_tok[2] = {5, 61};
    int32_t ok_slots[2] = {1, 2};
    OK(hspmn_tensor_copy_in(s2, ok_slots, 8));
    OK(hspmn_tensor_copy_in(tk2, bad_tok, 8));
    EXPECT_STATUS(hspmn_decoder_append(dec, s2, tk2, lg2, nullptr), HSPMN_ERR_INVALID_ARGUMENT, "tokens[1, 0] = 61");
    OK(hspmn_decoder_reset(dec, 0));
    OK(hspmn_decoder_length(dec, 0, &len));
    EXPECT(len == 0);
    EXPECT_STATUS(hspmn_decoder_reset(dec, 3), HSPMN_ERR_INVALID_ARGUMENT, "slot (3)");
    for (hspmn_tensor* t : {s2, tk2, lg2, s1, tk20, b}) OK(hspmn_tensor_destroy(t));
    OK(hspmn_decoder_destroy(dec));
    OK(hspmn_model_destroy(m));

    // Top-k routing cannot decode.
    p.block.routing = HSPMN_ROUTING_TOPK;
    OK(hspmn_model_create(ctx, &p, 8, &m));
    EXPECT_STATUS(hspmn_decoder_create(m, 1, 8, &dec), HSPMN_ERR_INVALID_ARGUMENT, "top-k");
    OK(hspmn_model_destroy(m));
    OK(hspmn_context_destroy(ctx));
}

int main() {
    test_decoder();
    test_repeat_backward();
    test_params_and_names();
    test_forward_checks();
    test_thread_count_invariance();
    test_loss_scale();
    test_skipped_step();
    test_recompute();
    hspmn_alloc_stats st;
    OK(hspmn_alloc_stats_get(&st));
    EXPECT(st.live_tensors == 0 && st.live_blocks == 0 && st.live_contexts == 0 && st.live_bytes == 0);
    return report();
}
