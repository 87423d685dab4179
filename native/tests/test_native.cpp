// ABI-level tests of libhspmn: argument checks and their messages, state errors, NaN policy, busy
// flags, allocation accounting, Philox known answers, determinism and threshold-routing causality.
// Numerical parity with the reference lives in ../reference/check_native.py (golden cases).
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "../src/core/env_choice.h"
#include "../src/core/error.h"
#include "../src/core/philox.h"
#include "abi_check.h"
#include "hspmn.h"

static hspmn_block_params small_params(int routing = HSPMN_ROUTING_TOPK) {
    hspmn_block_params p = block_params(32, 4, 2, 2);
    p.routing = routing;
    return p;
}

// A block of small_params(routing) on ctx, of width dim.
static hspmn_block* small_block(hspmn_context* ctx, uint64_t seed, int routing = HSPMN_ROUTING_TOPK, int32_t dim = 32) {
    hspmn_block_params bp = small_params(routing);
    bp.dim = dim;
    hspmn_block* block = nullptr;
    OK(hspmn_block_create(ctx, &bp, seed, &block));
    return block;
}

static std::vector<uint16_t> read_bf16(hspmn_tensor* t) { return read_values<uint16_t>(t); }

// env_choice: the CUDA runtime's settings (HSPMN_STREAMS, HSPMN_SWIGLU_GEMM, ..._CLUSTER) read through it.
static void test_env_choice() {
    const char* name = "HSPMN_TEST_ENV_CHOICE";
    unsetenv(name);
    EXPECT(hspmn::env_choice(name, {"0", "1"}, -1, "0 or 1") == -1);
    setenv(name, "", 1);
    EXPECT(hspmn::env_choice(name, {"0", "1"}, 7, "0 or 1") == 7);
    setenv(name, "1", 1);
    EXPECT(hspmn::env_choice(name, {"0", "1"}, -1, "0 or 1") == 1);
    setenv(name, "0", 1);
    EXPECT(hspmn::env_choice(name, {"0", "1"}, -1, "0 or 1") == 0);
    for (const char* bad : {"2", "01", "yes"}) {
        setenv(name, bad, 1);
        try {
            hspmn::env_choice(name, {"0", "1"}, -1, "0 or 1 (what each does)");
            EXPECT(false);
        } catch (const hspmn::Error& e) {
            EXPECT(e.status == HSPMN_ERR_INVALID_ARGUMENT);
            EXPECT(e.message == std::string(name) + "=" + bad + ": expected 0 or 1 (what each does)");
        }
    }
    unsetenv(name);
}

static void test_library() {
    EXPECT(hspmn_abi_version() == HSPMN_ABI_VERSION);
    EXPECT(std::strstr(hspmn_version_string(), "libhspmn") != nullptr);
    EXPECT(std::strcmp(hspmn_status_name(HSPMN_ERR_BUSY), "HSPMN_ERR_BUSY") == 0);
    EXPECT(std::strcmp(hspmn_status_name(HSPMN_ERR_DEVICE_LOST), "HSPMN_ERR_DEVICE_LOST") == 0);
    EXPECT(hspmn_backend_built(HSPMN_BACKEND_CPU) == 1);
    // The build tells the test which answer is right (CMake defines HSPMN_TEST_CUDA_BUILT).
    EXPECT(hspmn_backend_built(HSPMN_BACKEND_CUDA) == HSPMN_TEST_CUDA_BUILT);
    EXPECT(hspmn_backend_built(7) == 0);
    EXPECT_STATUS(hspmn_alloc_stats_get(nullptr), HSPMN_ERR_INVALID_ARGUMENT, "out is NULL");
}

static void test_philox() {
    // Random123 known answers for philox4x32-10.
    hspmn::Philox4x32 r = hspmn::philox4x32_10({{0, 0, 0, 0}}, 0, 0);
    EXPECT(r.v[0] == 0x6627e8d5u && r.v[1] == 0xe169c58du && r.v[2] == 0xbc57ac4cu && r.v[3] == 0x9b00dbd8u);
    r = hspmn::philox4x32_10({{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu);
    EXPECT(r.v[0] == 0x408f276du && r.v[1] == 0x41c83b0eu && r.v[2] == 0xa20bc7c6u && r.v[3] == 0x6d5451fdu);
    r = hspmn::philox4x32_10({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u);
    EXPECT(r.v[0] == 0xd16cfe09u && r.v[1] == 0x94fdccebu && r.v[2] == 0x5001e420u && r.v[3] == 0x24126ea1u);

    hspmn_context* ctx = make_ctx();
    hspmn_tensor* g = make(ctx, HSPMN_DTYPE_F32, {3, 17});
    OK(hspmn_gumbel_noise(ctx, 0x123456789abcull, 5, 2, g));
    std::vector<float> v(51);
    OK(hspmn_tensor_copy_out(g, v.data(), 51 * 4));
    bool same = true;
    for (int b = 0; b < 3; ++b)
        for (int s = 0; s < 17; ++s) same &= v[b * 17 + s] == hspmn::gumbel_sample(0x123456789abcull, 5, 2, b, s);
    EXPECT(same);
    hspmn_tensor* bad = make(ctx, HSPMN_DTYPE_BF16, {3, 17});
    EXPECT_STATUS(hspmn_gumbel_noise(ctx, 1, 0, 0, bad), HSPMN_ERR_DTYPE, "expected dtype f32, got bf16");
    OK(hspmn_tensor_destroy(g));
    OK(hspmn_tensor_destroy(bad));
    OK(hspmn_context_destroy(ctx));
}

static void test_context_and_tensors() {
    hspmn_context_params p = hspmn_context_default_params();
    hspmn_context* ctx = reinterpret_cast<hspmn_context*>(1);
    p.backend = HSPMN_BACKEND_CUDA;
    bool cuda_device = false;
    if (HSPMN_TEST_CUDA_BUILT) {
        // a CUDA build answers with a context where a device is usable, NO_DEVICE elsewhere
        hspmn_status st = hspmn_context_create(&p, &ctx);
        EXPECT(st == HSPMN_OK || st == HSPMN_ERR_NO_DEVICE);
        cuda_device = st == HSPMN_OK;
        if (cuda_device) OK(hspmn_context_destroy(ctx));
        else EXPECT(ctx == nullptr);
    } else {
        EXPECT_STATUS(hspmn_context_create(&p, &ctx), HSPMN_ERR_NOT_BUILT, "built without CUDA");
        EXPECT(ctx == nullptr);
    }
    p.backend = 5;
    EXPECT_STATUS(hspmn_context_create(&p, &ctx), HSPMN_ERR_INVALID_ARGUMENT, "backend (5)");
    p.backend = HSPMN_BACKEND_AUTO;
    p.nan_policy = 3;
    EXPECT_STATUS(hspmn_context_create(&p, &ctx), HSPMN_ERR_INVALID_ARGUMENT, "nan_policy (3)");
    p.nan_policy = HSPMN_NAN_REJECT;
    p.num_threads = -1;
    EXPECT_STATUS(hspmn_context_create(&p, &ctx), HSPMN_ERR_INVALID_ARGUMENT, "num_threads (-1)");
    p.num_threads = 0;
    EXPECT_STATUS(hspmn_context_create(nullptr, &ctx), HSPMN_ERR_INVALID_ARGUMENT, "params is NULL");
    OK(hspmn_context_create(&p, &ctx));
    int32_t backend = -1;
    OK(hspmn_context_backend(ctx, &backend));
    EXPECT(backend == (cuda_device ? HSPMN_BACKEND_CUDA : HSPMN_BACKEND_CPU));  // AUTO
    OK(hspmn_context_synchronize(ctx));
    OK(hspmn_context_destroy(ctx));
    // the rest checks the CPU backend's tensors, whatever AUTO picked
    p.backend = HSPMN_BACKEND_CPU;
    OK(hspmn_context_create(&p, &ctx));

    int64_t shape[4] = {2, 3, 0, 1};
    hspmn_tensor* t = nullptr;
    EXPECT_STATUS(hspmn_tensor_create(ctx, HSPMN_DTYPE_F32, HSPMN_MEMORY_HOST, 3, shape, &t), HSPMN_ERR_SHAPE,
                  "shape[2] (0)");
    EXPECT_STATUS(hspmn_tensor_create(ctx, HSPMN_DTYPE_F32, HSPMN_MEMORY_HOST, 5, shape, &t),
                  HSPMN_ERR_INVALID_ARGUMENT, "ndim (5)");
    EXPECT_STATUS(hspmn_tensor_create(ctx, 9, HSPMN_MEMORY_HOST, 2, shape, &t), HSPMN_ERR_INVALID_ARGUMENT, "dtype (9)");
    EXPECT_STATUS(hspmn_tensor_create(ctx, HSPMN_DTYPE_F32, HSPMN_MEMORY_DEVICE, 2, shape, &t), HSPMN_ERR_MEMORY_KIND,
                  "CPU backend");
    OK(hspmn_tensor_create(ctx, HSPMN_DTYPE_BF16, HSPMN_MEMORY_PINNED, 2, shape, &t));
    hspmn_tensor_desc d;
    OK(hspmn_tensor_describe(t, &d));
    EXPECT(d.ndim == 2 && d.shape[0] == 2 && d.shape[1] == 3 && d.shape[2] == 1 && d.numel == 6 && d.nbytes == 12);
    void* data = nullptr;
    OK(hspmn_tensor_data(t, &data));
    EXPECT(data != nullptr && static_cast<uint16_t*>(data)[5] == 0);  // zero-filled
    uint16_t buf[6] = {1, 2, 3, 4, 5, 6};
    EXPECT_STATUS(hspmn_tensor_copy_in(t, buf, 10), HSPMN_ERR_SHAPE, "nbytes (10) must equal the tensor's nbytes (12)");
    OK(hspmn_tensor_copy_in(t, buf, 12));
    int64_t s2[1] = {6};
    hspmn_tensor* u = nullptr;
    OK(hspmn_tensor_create(ctx, HSPMN_DTYPE_BF16, HSPMN_MEMORY_HOST, 1, s2, &u));
    OK(hspmn_tensor_copy(u, t));
    uint16_t back[6];
    OK(hspmn_tensor_copy_out(u, back, 12));
    EXPECT(std::memcmp(back, buf, 12) == 0);
    hspmn_tensor* f = make(ctx, HSPMN_DTYPE_F32, {6});
    EXPECT_STATUS(hspmn_tensor_copy(f, t), HSPMN_ERR_DTYPE, "src: expected dtype f32, got bf16");

    EXPECT_STATUS(hspmn_context_destroy(ctx), HSPMN_ERR_STATE, "3 tensor(s)");
    OK(hspmn_tensor_destroy(t));
    OK(hspmn_tensor_destroy(u));
    OK(hspmn_tensor_destroy(f));
    OK(hspmn_tensor_destroy(nullptr));
    OK(hspmn_context_destroy(ctx));
    OK(hspmn_context_destroy(nullptr));
}

static void test_params_validate() {
    struct Case {
        void (*edit)(hspmn_block_params&);
        const char* fragment;
    } cases[] = {
        {[](hspmn_block_params& p) { p.num_kv_heads = 3; }, "num_kv_heads (3) must divide num_heads (16)"},
        {[](hspmn_block_params& p) { p.num_heads = 12; }, "num_heads (12) must divide dim (2048)"},
        {[](hspmn_block_params& p) { p.dim = 0; }, "dim (0)"},
        {[](hspmn_block_params& p) { p.dim = 48; p.num_heads = 16; p.num_kv_heads = 4; }, "must be even"},
        {[](hspmn_block_params& p) { p.mlp_ratio = 0; }, "mlp_ratio (0)"},
        {[](hspmn_block_params& p) { p.conv_kernel = 0; }, "conv_kernel (0)"},
        {[](hspmn_block_params& p) { p.routing = 2; }, "routing (2)"},
        {[](hspmn_block_params& p) { p.rope_base = 1.0f; }, "rope_base (1)"},
        {[](hspmn_block_params& p) { p.sparsity_k = 0.0f; }, "sparsity_k (0) must be in (0, 1]"},
        {[](hspmn_block_params& p) { p.sparsity_k = 1.5f; }, "sparsity_k (1.5)"},
        {[](hspmn_block_params& p) { p.sparsity_k = NAN; }, "sparsity_k (nan)"},
        {[](hspmn_block_params& p) { p.router_sparsity_coef = -0.1f; }, "router_sparsity_coef (-0.1)"},
        {[](hspmn_block_params& p) { p.router_entropy_coef = -1.0f; }, "router_entropy_coef (-1)"},
        {[](hspmn_block_params& p) { p.norm_eps = 0.0f; }, "norm_eps (0)"},
    };
    hspmn_context* ctx = make_ctx();
    for (const Case& c : cases) {
        hspmn_block_params p = hspmn_block_default_params();
        c.edit(p);
        EXPECT_STATUS(hspmn_block_params_validate(&p), HSPMN_ERR_INVALID_ARGUMENT, c.fragment);
        hspmn_alloc_stats before, after;
        OK(hspmn_alloc_stats_get(&before));
        hspmn_block* b = reinterpret_cast<hspmn_block*>(1);
        EXPECT_STATUS(hspmn_block_create(ctx, &p, 1, &b), HSPMN_ERR_INVALID_ARGUMENT, c.fragment);
        OK(hspmn_alloc_stats_get(&after));
        EXPECT(b == nullptr && after.live_bytes == before.live_bytes && after.live_blocks == before.live_blocks);
    }
    hspmn_block_params p = hspmn_block_default_params();
    OK(hspmn_block_params_validate(&p));
    OK(hspmn_context_destroy(ctx));
}

static void test_parameters() {
    hspmn_context* ctx = make_ctx();
    hspmn_block* block = small_block(ctx, 3);
    int32_t n = 0;
    OK(hspmn_block_param_count(block, &n));
    EXPECT(n == 13);
    const char* name = nullptr;
    OK(hspmn_block_param_name(block, 5, &name));
    EXPECT(name && std::strcmp(name, "reflex.gate") == 0);
    EXPECT_STATUS(hspmn_block_param_name(block, 13, &name), HSPMN_ERR_INVALID_ARGUMENT, "index (13)");
    hspmn_tensor_desc d;
    OK(hspmn_block_param_describe(block, "attn.k", &d));
    EXPECT(d.ndim == 2 && d.shape[0] == 16 && d.shape[1] == 32 && d.dtype == HSPMN_DTYPE_BF16);
    OK(hspmn_block_param_describe(block, "reflex.conv", &d));
    EXPECT(d.ndim == 2 && d.shape[0] == 32 && d.shape[1] == 3);
    EXPECT_STATUS(hspmn_block_param_describe(block, "attn.w", &d), HSPMN_ERR_NOT_FOUND, "unknown parameter 'attn.w'");

    // f32 -> bf16 rounds to nearest even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7.
    hspmn_tensor* b = make(ctx, HSPMN_DTYPE_F32, {1});
    float halfway = 1.00390625f, got = 0;
    OK(hspmn_tensor_copy_in(b, &halfway, 4));
    OK(hspmn_block_set_param(block, "router.b", b));
    OK(hspmn_block_get_param(block, "router.b", b));
    OK(hspmn_tensor_copy_out(b, &got, 4));
    EXPECT(got == 1.0f);
    hspmn_tensor* wrong = make(ctx, HSPMN_DTYPE_F32, {2});
    EXPECT_STATUS(hspmn_block_set_param(block, "router.b", wrong), HSPMN_ERR_SHAPE, "src: expected shape [1], got [2]");
    hspmn_tensor* i32 = make(ctx, HSPMN_DTYPE_I32, {1});
    EXPECT_STATUS(hspmn_block_get_grad(block, "router.b", i32), HSPMN_ERR_DTYPE, "bf16 or f32");

    // Initialisation: norms 1, log_temp 0, router.b = logit(rho), weights within 1/sqrt(fan_in).
    hspmn_tensor* norm = make(ctx, HSPMN_DTYPE_F32, {32});
    std::vector<float> v(32);
    OK(hspmn_block_get_param(block, "attn.norm", norm));
    OK(hspmn_tensor_copy_out(norm, v.data(), 128));
    EXPECT(v[0] == 1.0f && v[31] == 1.0f);
    hspmn_block* fresh = small_block(ctx, 3);
    OK(hspmn_block_get_param(fresh, "router.b", b));
    OK(hspmn_tensor_copy_out(b, &got, 4));
    EXPECT(std::fabs(got - std::log(0.25f / 0.75f)) < 1e-2f);
    hspmn_tensor* gate = make(ctx, HSPMN_DTYPE_F32, {64, 32});
    std::vector<float> g(64 * 32);
    OK(hspmn_block_get_param(fresh, "reflex.gate", gate));
    OK(hspmn_tensor_copy_out(gate, g.data(), 64 * 32 * 4));
    float mx = 0;
    for (float x : g) mx = std::fmax(mx, std::fabs(x));
    EXPECT(mx <= 1.0f / std::sqrt(32.0f) * 1.004f && mx > 0.8f / std::sqrt(32.0f));

    hspmn_tensor* ts[] = {b, wrong, i32, norm, gate};
    for (auto* t : ts) OK(hspmn_tensor_destroy(t));
    EXPECT_STATUS(hspmn_context_destroy(ctx), HSPMN_ERR_STATE, "2 block(s)");
    OK(hspmn_block_destroy(block));
    OK(hspmn_block_destroy(fresh));
    OK(hspmn_context_destroy(ctx));
}

// A block of small_params() on a CPU context with x / out [2, 8, 32] bf16 and aux [1] f32, and the wrong
// arguments the forward checks use: xf (f32), x31 (D = 31), out7 (S = 7), aux2 ([2]) and x_other (another
// context's). The destructor frees all of it, the contexts last.
struct ForwardFixture {
    static constexpr int64_t B = 2, S = 8, D = 32;
    hspmn_context* ctx = make_ctx();
    hspmn_context* other = make_ctx();
    hspmn_block* block = small_block(ctx, 1);
    hspmn_tensor* x = make(ctx, HSPMN_DTYPE_BF16, {B, S, D});
    hspmn_tensor* out = make(ctx, HSPMN_DTYPE_BF16, {B, S, D});
    hspmn_tensor* aux = make(ctx, HSPMN_DTYPE_F32, {1});
    hspmn_tensor* xf = make(ctx, HSPMN_DTYPE_F32, {B, S, D});
    hspmn_tensor* x31 = make(ctx, HSPMN_DTYPE_BF16, {B, S, 31});
    hspmn_tensor* out7 = make(ctx, HSPMN_DTYPE_BF16, {B, 7, D});
    hspmn_tensor* aux2 = make(ctx, HSPMN_DTYPE_F32, {2});
    hspmn_tensor* x_other = make(other, HSPMN_DTYPE_BF16, {B, S, D});

    ForwardFixture() { fill_bf16(x, 1.0f, 0.0f); }
    ~ForwardFixture() {
        for (hspmn_tensor* t : {x, out, aux, xf, x31, out7, aux2, x_other}) OK(hspmn_tensor_destroy(t));
        OK(hspmn_block_destroy(block));
        OK(hspmn_context_destroy(ctx));
        OK(hspmn_context_destroy(other));
    }
};

// The refusals hspmn_block_forward and hspmn_graph_capture_forward share, in the same words, through
// forward(block, params, x, out, aux).
template <class Forward>
static void check_forward_refusals(const ForwardFixture& f, Forward forward) {
    hspmn_forward_params fp = hspmn_forward_default_params();
    EXPECT_STATUS(forward(f.block, &fp, f.xf, f.out, f.aux), HSPMN_ERR_DTYPE, "x: expected dtype bf16, got f32");
    EXPECT_STATUS(forward(f.block, &fp, f.x31, f.out, f.aux), HSPMN_ERR_SHAPE, "x: expected shape [B, S, 32]");
    EXPECT_STATUS(forward(f.block, &fp, f.x, f.out7, f.aux), HSPMN_ERR_SHAPE,
                  "out: expected shape [2, 8, 32], got [2, 7, 32]");
    EXPECT_STATUS(forward(f.block, &fp, f.x, f.out, f.aux2), HSPMN_ERR_SHAPE, "aux: expected shape [1], got [2]");
    EXPECT_STATUS(forward(f.block, &fp, f.x_other, f.out, f.aux), HSPMN_ERR_INVALID_ARGUMENT,
                  "x belongs to another context");
    EXPECT_STATUS(forward(f.block, &fp, nullptr, f.out, f.aux), HSPMN_ERR_INVALID_ARGUMENT, "x is NULL");
    EXPECT_STATUS(forward(f.block, &fp, f.x, nullptr, f.aux), HSPMN_ERR_INVALID_ARGUMENT, "out is NULL");
    EXPECT_STATUS(forward(f.block, nullptr, f.x, f.out, f.aux), HSPMN_ERR_INVALID_ARGUMENT, "params is NULL");
    EXPECT_STATUS(forward(nullptr, &fp, f.x, f.out, f.aux), HSPMN_ERR_INVALID_ARGUMENT, "block is NULL");
    fp.training = 2;
    EXPECT_STATUS(forward(f.block, &fp, f.x, f.out, f.aux), HSPMN_ERR_INVALID_ARGUMENT, "params.training (2)");
    fp.training = 0;
    fp.aux_target = 1.5f;
    EXPECT_STATUS(forward(f.block, &fp, f.x, f.out, f.aux), HSPMN_ERR_INVALID_ARGUMENT, "params.aux_target (1.5)");
    fp.aux_target = -1.0f;
    // residual dropout: p in [0, 1), checked whether or not the forward trains; reserved must be 0
    EXPECT(fp.dropout == 0.0f && fp.reserved == 0);
    for (float bad : {1.0f, -0.25f, NAN, INFINITY}) {
        fp.dropout = bad;
        EXPECT_STATUS(forward(f.block, &fp, f.x, f.out, f.aux), HSPMN_ERR_INVALID_ARGUMENT, "params.dropout");
    }
    fp.dropout = 0.0f;
    fp.reserved = 3;
    EXPECT_STATUS(forward(f.block, &fp, f.x, f.out, f.aux), HSPMN_ERR_INVALID_ARGUMENT, "params.reserved (3)");
    fp.reserved = 0;
    // row offset: the first row's index in the batch the draws are keyed by, never negative
    EXPECT(fp.row_offset == 0);
    fp.row_offset = -1;
    EXPECT_STATUS(forward(f.block, &fp, f.x, f.out, f.aux), HSPMN_ERR_INVALID_ARGUMENT,
                  "params.row_offset (-1) must be >= 0");
}

static void test_forward_checks() {
    ForwardFixture f;
    check_forward_refusals(f, hspmn_block_forward);
    hspmn_context* ctx = f.ctx;
    hspmn_block* block = f.block;
    hspmn_tensor *x = f.x, *out = f.out, *aux = f.aux;
    const int64_t B = f.B, S = f.S;
    hspmn_forward_params fp = hspmn_forward_default_params();

    hspmn_tensor* noise = make(ctx, HSPMN_DTYPE_F32, {B, S});
    hspmn_tensor* idx = make(ctx, HSPMN_DTYPE_I32, {B, 3});
    hspmn_tensor* cnt = make(ctx, HSPMN_DTYPE_I32, {B});
    EXPECT_STATUS(hspmn_block_forward_routed(block, &fp, x, noise, nullptr, nullptr, out, aux),
                  HSPMN_ERR_INVALID_ARGUMENT, "params.training is 0");
    EXPECT_STATUS(hspmn_block_forward_routed(block, &fp, x, nullptr, idx, nullptr, out, aux),
                  HSPMN_ERR_INVALID_ARGUMENT, "indices is given without counts");
    int32_t iv[6] = {1, 3, 5, 2, 2, -1}, cv[2] = {3, 2};
    OK(hspmn_tensor_copy_in(idx, iv, sizeof iv));
    OK(hspmn_tensor_copy_in(cnt, cv, sizeof cv));
    EXPECT_STATUS(hspmn_block_forward_routed(block, &fp, x, nullptr, idx, cnt, out, aux), HSPMN_ERR_INVALID_ARGUMENT,
                  "indices[1, 1] (2) must be greater than indices[1, 0] (2)");
    int32_t iv2[6] = {1, 3, 8, 0, 0, 0};
    OK(hspmn_tensor_copy_in(idx, iv2, sizeof iv2));
    EXPECT_STATUS(hspmn_block_forward_routed(block, &fp, x, nullptr, idx, cnt, out, aux), HSPMN_ERR_INVALID_ARGUMENT,
                  "indices[0, 2] (8) must be in [0, 8)");
    int32_t cv2[2] = {0, 4};
    OK(hspmn_tensor_copy_in(cnt, cv2, sizeof cv2));
    EXPECT_STATUS(hspmn_block_forward_routed(block, &fp, x, nullptr, idx, cnt, out, aux), HSPMN_ERR_INVALID_ARGUMENT,
                  "counts[1] (4) must be in [0, 3]");
    // counts 0 for both sequences: no attention at all, out = x + m.
    int32_t cv3[2] = {0, 0};
    OK(hspmn_tensor_copy_in(cnt, cv3, sizeof cv3));
    OK(hspmn_block_forward_routed(block, &fp, x, nullptr, idx, cnt, out, aux));
    fp.training = 1;
    fp.noise = 0;
    OK(hspmn_block_forward_routed(block, &fp, x, nullptr, idx, cnt, out, aux));
    hspmn_backward_params bw = hspmn_backward_default_params();
    OK(hspmn_block_backward(block, &bw, out, aux, nullptr));  // no query anywhere: attention skipped
    fp.training = 0;
    fp.noise = 1;

    // route: topk needs C >= k = floor(8 * 0.25) = 2; threshold needs C == S.
    hspmn_tensor* idx1 = make(ctx, HSPMN_DTYPE_I32, {B, 1});
    EXPECT_STATUS(hspmn_block_route(block, &fp, x, nullptr, nullptr, nullptr, idx1, cnt, nullptr), HSPMN_ERR_SHAPE,
                  "C >= k = 2");
    OK(hspmn_block_route(block, &fp, x, nullptr, nullptr, nullptr, idx, cnt, aux));
    int32_t got_idx[6], got_cnt[2];
    OK(hspmn_tensor_copy_out(idx, got_idx, sizeof got_idx));
    OK(hspmn_tensor_copy_out(cnt, got_cnt, sizeof got_cnt));
    EXPECT(got_cnt[0] == 2 && got_cnt[1] == 2 && got_idx[2] == -1 && got_idx[5] == -1);
    EXPECT(got_idx[0] < got_idx[1] && got_idx[3] < got_idx[4]);

    for (hspmn_tensor* t : {noise, idx, cnt, idx1}) OK(hspmn_tensor_destroy(t));
}

static void test_nan_policy() {
    for (int policy : {HSPMN_NAN_REJECT, HSPMN_NAN_PROPAGATE}) {
        hspmn_context* ctx = make_ctx(2, policy);
        hspmn_block* block = small_block(ctx, 1);
        hspmn_tensor* x = make(ctx, HSPMN_DTYPE_BF16, {2, 8, 32});
        hspmn_tensor* out = make(ctx, HSPMN_DTYPE_BF16, {2, 8, 32});
        fill_bf16(x, 1.0f, 0.0f);
        std::vector<uint16_t> v = read_bf16(x);
        v[1 * 256 + 3 * 32 + 5] = 0x7fc0;  // NaN at [1, 3, 5]
        OK(hspmn_tensor_copy_in(x, v.data(), static_cast<int64_t>(v.size() * 2)));
        hspmn_forward_params fp = hspmn_forward_default_params();
        if (policy == HSPMN_NAN_REJECT) {
            EXPECT_STATUS(hspmn_block_forward(block, &fp, x, out, nullptr), HSPMN_ERR_NON_FINITE,
                          "x contains NaN at [1, 3, 5] (flat index 357)");
            std::vector<uint16_t> o = read_bf16(out);
            bool untouched = true;
            for (uint16_t h : o) untouched &= h == 0;
            EXPECT(untouched);
            v[1 * 256 + 3 * 32 + 5] = 0xff80;  // -Inf
            OK(hspmn_tensor_copy_in(x, v.data(), static_cast<int64_t>(v.size() * 2)));
            EXPECT_STATUS(hspmn_block_route(block, &fp, x, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr),
                          HSPMN_ERR_NON_FINITE, "x contains -Inf at [1, 3, 5]");
            // d_out is scanned too.
            v[1 * 256 + 3 * 32 + 5] = 0;
            OK(hspmn_tensor_copy_in(x, v.data(), static_cast<int64_t>(v.size() * 2)));
            fp.training = 1;
            OK(hspmn_block_forward(block, &fp, x, out, nullptr));
            hspmn_tensor* d_out = make(ctx, HSPMN_DTYPE_BF16, {2, 8, 32});
            std::vector<uint16_t> g(512, 0);
            g[7] = 0x7f80;
            OK(hspmn_tensor_copy_in(d_out, g.data(), 1024));
            hspmn_backward_params bw = hspmn_backward_default_params();
            EXPECT_STATUS(hspmn_block_backward(block, &bw, d_out, nullptr, nullptr), HSPMN_ERR_NON_FINITE,
                          "d_out contains +Inf at [0, 0, 7]");
            OK(hspmn_tensor_destroy(d_out));
        } else {
            OK(hspmn_block_forward(block, &fp, x, out, nullptr));
            std::vector<uint16_t> o = read_bf16(out);
            EXPECT(std::isnan(from_bf16(o[1 * 256 + 3 * 32 + 5])));
        }
        OK(hspmn_tensor_destroy(x));
        OK(hspmn_tensor_destroy(out));
        OK(hspmn_block_destroy(block));
        OK(hspmn_context_destroy(ctx));
    }
}

static void test_backward_state() {
    hspmn_context* ctx = make_ctx();
    hspmn_block* block = small_block(ctx, 1);
    hspmn_tensor* x = make(ctx, HSPMN_DTYPE_BF16, {2, 8, 32});
    hspmn_tensor* out = make(ctx, HSPMN_DTYPE_BF16, {2, 8, 32});
    hspmn_tensor* d_out = make(ctx, HSPMN_DTYPE_BF16, {2, 8, 32});
    hspmn_tensor* d_small = make(ctx, HSPMN_DTYPE_BF16, {2, 7, 32});
    hspmn_tensor* d_x = make(ctx, HSPMN_DTYPE_BF16, {2, 8, 32});
    fill_bf16(x, 1.0f, 0.0f);
    fill_bf16(d_out, 0.1f, 1.0f);
    hspmn_backward_params bw = hspmn_backward_default_params();
    hspmn_forward_params fp = hspmn_forward_default_params();
    EXPECT_STATUS(hspmn_block_backward(block, &bw, d_out, nullptr, d_x), HSPMN_ERR_STATE, "no training forward");
    OK(hspmn_block_forward(block, &fp, x, out, nullptr));  // inference keeps nothing
    EXPECT_STATUS(hspmn_block_backward(block, &bw, d_out, nullptr, d_x), HSPMN_ERR_STATE, "no training forward");
    fp.training = 1;
    OK(hspmn_block_forward(block, &fp, x, out, nullptr));
    EXPECT_STATUS(hspmn_block_backward(block, &bw, d_small, nullptr, d_x), HSPMN_ERR_SHAPE,
                  "d_out: expected shape [2, 8, 32] (the x of the last training forward), got [2, 7, 32]");
    bw.accumulate = 5;
    EXPECT_STATUS(hspmn_block_backward(block, &bw, d_out, nullptr, d_x), HSPMN_ERR_INVALID_ARGUMENT,
                  "params.accumulate (5)");
    bw.accumulate = 0;
    OK(hspmn_block_backward(block, &bw, d_out, nullptr, d_x));
    OK(hspmn_block_backward(block, &bw, d_out, nullptr, nullptr));  // repeatable; d_x optional
    hspmn_tensor* g = make(ctx, HSPMN_DTYPE_F32, {64, 32});
    std::vector<float> gv(64 * 32);
    OK(hspmn_block_get_grad(block, "reflex.gate", g));
    OK(hspmn_tensor_copy_out(g, gv.data(), 64 * 32 * 4));
    double norm = 0;
    for (float f : gv) norm += f * f;
    EXPECT(norm > 0);
    OK(hspmn_block_zero_grad(block));
    OK(hspmn_block_get_grad(block, "reflex.gate", g));
    OK(hspmn_tensor_copy_out(g, gv.data(), 64 * 32 * 4));
    norm = 0;
    for (float f : gv) norm += f * f;
    EXPECT(norm == 0);
    hspmn_tensor* ts[] = {x, out, d_out, d_small, d_x, g};
    for (auto* t : ts) OK(hspmn_tensor_destroy(t));
    OK(hspmn_block_destroy(block));
    OK(hspmn_context_destroy(ctx));
}

// Output, d_x and gradients do not depend on the thread count: every reduction has a fixed order.
static void test_thread_count_invariance() {
    std::vector<uint16_t> outs[2], dxs[2];
    std::vector<float> grads[2];
    const int threads[2] = {1, 3};
    for (int r = 0; r < 2; ++r) {
        hspmn_context* ctx = make_ctx(threads[r]);
        hspmn_block* block = small_block(ctx, 9, HSPMN_ROUTING_TOPK, 64);
        hspmn_tensor* x = make(ctx, HSPMN_DTYPE_BF16, {3, 70, 64});
        hspmn_tensor* out = make(ctx, HSPMN_DTYPE_BF16, {3, 70, 64});
        hspmn_tensor* d_out = make(ctx, HSPMN_DTYPE_BF16, {3, 70, 64});
        hspmn_tensor* d_x = make(ctx, HSPMN_DTYPE_BF16, {3, 70, 64});
        hspmn_tensor* g = make(ctx, HSPMN_DTYPE_F32, {128, 64});
        fill_bf16(x, 1.0f, 0.5f);
        fill_bf16(d_out, 0.1f, 0.2f);
        hspmn_forward_params fp = hspmn_forward_default_params();
        fp.training = 1;
        fp.seed = 77;
        OK(hspmn_block_forward(block, &fp, x, out, nullptr));
        hspmn_backward_params bw = hspmn_backward_default_params();
        OK(hspmn_block_backward(block, &bw, d_out, nullptr, d_x));
        outs[r] = read_bf16(out);
        dxs[r] = read_bf16(d_x);
        for (const char* n : {"reflex.gate", "attn.k"}) {
            hspmn_tensor_desc d;
            OK(hspmn_block_param_describe(block, n, &d));
            hspmn_tensor* gt = make(ctx, HSPMN_DTYPE_F32, {d.shape[0], d.shape[1]});
            std::vector<float> v(static_cast<size_t>(d.numel));
            OK(hspmn_block_get_grad(block, n, gt));
            OK(hspmn_tensor_copy_out(gt, v.data(), d.numel * 4));
            grads[r].insert(grads[r].end(), v.begin(), v.end());
            OK(hspmn_tensor_destroy(gt));
        }
        hspmn_tensor* ts[] = {x, out, d_out, d_x, g};
        for (auto* t : ts) OK(hspmn_tensor_destroy(t));
        OK(hspmn_block_destroy(block));
        OK(hspmn_context_destroy(ctx));
    }
    EXPECT(outs[0] == outs[1]);
    EXPECT(dxs[0] == dxs[1]);
    EXPECT(grads[0] == grads[1]);
}

// Threshold routing is causal: the output of a prefix equals the prefix of the output.
static void test_threshold_causality() {
    hspmn_context* ctx = make_ctx();
    hspmn_block* block = small_block(ctx, 5, HSPMN_ROUTING_THRESHOLD);
    hspmn_tensor* x = make(ctx, HSPMN_DTYPE_BF16, {1, 40, 32});
    hspmn_tensor* out = make(ctx, HSPMN_DTYPE_BF16, {1, 40, 32});
    hspmn_tensor* xp = make(ctx, HSPMN_DTYPE_BF16, {1, 23, 32});
    hspmn_tensor* outp = make(ctx, HSPMN_DTYPE_BF16, {1, 23, 32});
    hspmn_tensor* cnt = make(ctx, HSPMN_DTYPE_I32, {1});
    hspmn_tensor* idx = make(ctx, HSPMN_DTYPE_I32, {1, 40});
    fill_bf16(x, 2.0f, 0.3f);
    // router.b = 0 centres the logits so that about half the tokens pass the threshold.
    hspmn_tensor* b = make(ctx, HSPMN_DTYPE_F32, {1});
    OK(hspmn_block_set_param(block, "router.b", b));
    OK(hspmn_tensor_destroy(b));
    std::vector<uint16_t> v = read_bf16(x);
    OK(hspmn_tensor_copy_in(xp, v.data(), 23 * 32 * 2));
    hspmn_forward_params fp = hspmn_forward_default_params();
    OK(hspmn_block_forward(block, &fp, x, out, nullptr));
    OK(hspmn_block_forward(block, &fp, xp, outp, nullptr));
    OK(hspmn_block_route(block, &fp, x, nullptr, nullptr, nullptr, idx, cnt, nullptr));
    int32_t c = 0;
    OK(hspmn_tensor_copy_out(cnt, &c, 4));
    std::printf("threshold causality: %d of 40 tokens routed\n", c);
    EXPECT(c > 0 && c < 40);  // some, not all, tokens attend: the test exercises both paths
    std::vector<uint16_t> full = read_bf16(out), pre = read_bf16(outp);
    EXPECT(std::equal(pre.begin(), pre.end(), full.begin()));
    hspmn_tensor* ts[] = {x, out, xp, outp, cnt, idx};
    for (auto* t : ts) OK(hspmn_tensor_destroy(t));
    OK(hspmn_block_destroy(block));
    OK(hspmn_context_destroy(ctx));
}

// Graph capture on a CPU context: every argument is checked as hspmn_block_forward checks it, then
// the backend answers INVALID_ARGUMENT (no graphs). The CUDA path is tests/graph_cuda.cpp.
static void test_graph_checks() {
    ForwardFixture f;
    hspmn_graph* g = reinterpret_cast<hspmn_graph*>(&f);  // must come back NULL on every failure
    check_forward_refusals(f, [&](hspmn_block* block, const hspmn_forward_params* fp, const hspmn_tensor* x,
                                  hspmn_tensor* out, hspmn_tensor* aux) {
        return hspmn_graph_capture_forward(block, fp, x, out, aux, &g);
    });
    EXPECT(g == nullptr);
    hspmn_block* block = f.block;
    hspmn_tensor *x = f.x, *out = f.out, *aux = f.aux;
    hspmn_forward_params fp = hspmn_forward_default_params();
    EXPECT_STATUS(hspmn_graph_capture_forward(block, &fp, x, out, aux, nullptr), HSPMN_ERR_INVALID_ARGUMENT,
                  "out_graph is NULL");
    fp.training = 1;
    EXPECT_STATUS(hspmn_graph_capture_forward(block, &fp, x, out, aux, &g), HSPMN_ERR_INVALID_ARGUMENT,
                  "params.training must be 0");
    fp.training = 0;
    // Valid arguments: the CPU backend has no graphs (before any memory-kind check: it has no DEVICE memory).
    EXPECT_STATUS(hspmn_graph_capture_forward(block, &fp, x, out, aux, &g), HSPMN_ERR_INVALID_ARGUMENT,
                  "graph capture needs the CUDA backend");
    EXPECT_STATUS(hspmn_graph_capture_forward(block, &fp, x, out, nullptr, &g), HSPMN_ERR_INVALID_ARGUMENT,
                  "this context runs on the CPU");
    EXPECT(g == nullptr);
    EXPECT_STATUS(hspmn_graph_launch(nullptr), HSPMN_ERR_INVALID_ARGUMENT, "graph is NULL");
    OK(hspmn_graph_destroy(nullptr));
    // Nothing was bound: the fixture's tensors, block and contexts all destroy (checked there).
}

// Two threads on one block: the second gets HSPMN_ERR_BUSY, never a race.
static void test_busy() {
    hspmn_context* ctx = make_ctx(1);
    hspmn_block* block = small_block(ctx, 1, HSPMN_ROUTING_TOPK, 256);
    hspmn_tensor* x = make(ctx, HSPMN_DTYPE_BF16, {2, 1024, 256});
    hspmn_tensor* out = make(ctx, HSPMN_DTYPE_BF16, {2, 1024, 256});
    fill_bf16(x, 1.0f, 0.0f);
    hspmn_forward_params fp = hspmn_forward_default_params();
    std::atomic<int> started{0};
    std::atomic<int> stop{0};
    hspmn_status worker_status = HSPMN_OK;
    std::thread worker([&] {
        started = 1;
        // The worker meets the main thread's calls too: BUSY is the expected answer for either side.
        while (!stop && worker_status == HSPMN_OK) {
            hspmn_status s = hspmn_block_forward(block, &fp, x, out, nullptr);
            if (s != HSPMN_ERR_BUSY) worker_status = s;
        }
    });
    while (!started) std::this_thread::yield();
    int busy = 0, other = 0;
    std::string msg;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (busy == 0 && std::chrono::steady_clock::now() < deadline) {
        hspmn_status s = hspmn_block_forward(block, &fp, x, out, nullptr);
        if (s == HSPMN_ERR_BUSY) {
            ++busy;
            msg = hspmn_last_error();
        } else if (s != HSPMN_OK) {
            if (other++ == 0) std::fprintf(stderr, "busy test: unexpected %s: %s\n", hspmn_status_name(s), hspmn_last_error());
        }
    }
    stop = 1;
    worker.join();
    if (worker_status != HSPMN_OK) std::fprintf(stderr, "busy test: worker got %s\n", hspmn_status_name(worker_status));
    if (busy == 0) std::fprintf(stderr, "busy test: no BUSY seen in 5 s\n");
    EXPECT(busy > 0 && other == 0 && worker_status == HSPMN_OK);
    EXPECT(msg.find("in use by another thread") != std::string::npos);
    OK(hspmn_tensor_destroy(x));
    OK(hspmn_tensor_destroy(out));
    OK(hspmn_block_destroy(block));
    OK(hspmn_context_destroy(ctx));
}

int main() {
    test_env_choice();
    test_library();
    test_philox();
    test_context_and_tensors();
    test_params_validate();
    test_parameters();
    test_forward_checks();
    test_graph_checks();
    test_nan_policy();
    test_backward_state();
    test_thread_count_invariance();
    test_threshold_causality();
    test_busy();
    hspmn_alloc_stats st;
    OK(hspmn_alloc_stats_get(&st));
    EXPECT(st.live_tensors == 0 && st.live_blocks == 0 && st.live_contexts == 0 && st.live_bytes == 0);
    EXPECT(st.peak_bytes > 0);
    return report();
}
