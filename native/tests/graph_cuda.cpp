// CUDA graphs of an inference forward through the ABI on a real device: a replay equals an ordinary
// forward bit for bit (new input written into x, set_param between replays, a smaller forward in
// between), scratch regrowth invalidates with HSPMN_ERR_STATE, bound tensors / block / context
// refuse to die while a graph lives, 1,000 replays hold no new memory. Without a device it prints
// "skipped: no device" and exits 0 (CI builds CUDA on machines without a GPU).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "abi_check.h"
#include "hspmn.h"

// D = 128, H = 2: head dim 64, a size the Triton attention is compiled for.
static const int64_t kB = 2, kS = 40, kD = 128;

static hspmn_tensor* device(hspmn_context* ctx, int dtype, std::vector<int64_t> shape) {
    return make(ctx, dtype, shape, HSPMN_MEMORY_DEVICE);
}

static void fill(hspmn_tensor* t, float phase) { fill_bf16(t, 1.0f, phase); }

static std::vector<uint8_t> bytes(hspmn_tensor* t) { return read_values<uint8_t>(t); }

static hspmn_block* make_block(hspmn_context* ctx, uint64_t seed) {
    hspmn_block_params p = block_params(static_cast<int32_t>(kD), 2, 1, 2);
    hspmn_block* b = nullptr;
    OK(hspmn_block_create(ctx, &p, seed, &b));
    return b;
}

// A block made with `seed` and its device x / out [kB, kS, kD] bf16 and aux [1] f32; the fixture frees
// them (every graph on them must be destroyed first).
struct BlockFixture {
    hspmn_block* block;
    hspmn_tensor* x;
    hspmn_tensor* out;
    hspmn_tensor* aux;
    BlockFixture(hspmn_context* ctx, uint64_t seed)
        : block(make_block(ctx, seed)),
          x(device(ctx, HSPMN_DTYPE_BF16, {kB, kS, kD})),
          out(device(ctx, HSPMN_DTYPE_BF16, {kB, kS, kD})),
          aux(device(ctx, HSPMN_DTYPE_F32, {1})) {}
    ~BlockFixture() {
        for (hspmn_tensor* t : {x, out, aux}) OK(hspmn_tensor_destroy(t));
        OK(hspmn_block_destroy(block));
    }
};

// out/aux of an ordinary inference forward of x into fresh tensors.
static void reference(hspmn_context* ctx, hspmn_block* block, hspmn_tensor* x, std::vector<uint8_t>* out,
                      std::vector<uint8_t>* aux) {
    hspmn_tensor_desc d;
    OK(hspmn_tensor_describe(x, &d));
    hspmn_tensor* o = device(ctx, HSPMN_DTYPE_BF16, {d.shape[0], d.shape[1], d.shape[2]});
    hspmn_tensor* a = device(ctx, HSPMN_DTYPE_F32, {1});
    hspmn_forward_params fp = hspmn_forward_default_params();
    OK(hspmn_block_forward(block, &fp, x, o, a));
    *out = bytes(o);
    *aux = bytes(a);
    OK(hspmn_tensor_destroy(o));
    OK(hspmn_tensor_destroy(a));
}

static void launch_and_compare(hspmn_context* ctx, hspmn_block* block, hspmn_graph* g, hspmn_tensor* x,
                               hspmn_tensor* out, hspmn_tensor* aux, const char* what) {
    OK(hspmn_graph_launch(g));
    OK(hspmn_context_synchronize(ctx));
    std::vector<uint8_t> got_out = bytes(out), got_aux = bytes(aux), want_out, want_aux;
    reference(ctx, block, x, &want_out, &want_aux);
    EXPECT(got_out == want_out, "%s: replayed out differs from an ordinary forward", what);
    EXPECT(got_aux == want_aux, "%s: replayed aux differs from an ordinary forward", what);
}

static void test_replay(hspmn_context* ctx) {
    const BlockFixture f(ctx, 1);
    hspmn_block* block = f.block;
    hspmn_tensor *x = f.x, *out = f.out, *aux = f.aux;
    fill(x, 0.0f);
    hspmn_forward_params fp = hspmn_forward_default_params();
    hspmn_graph* g = nullptr;
    OK(hspmn_graph_capture_forward(block, &fp, x, out, aux, &g));
    EXPECT(g != nullptr, "capture gave no graph");
    if (!g) return;
    // The capture ran the forward once: out already holds it.
    std::vector<uint8_t> want_out, want_aux;
    reference(ctx, block, x, &want_out, &want_aux);
    EXPECT(bytes(out) == want_out, "the capture's own forward wrote out");

    fill(x, 1.0f);  // new input at the bound address
    launch_and_compare(ctx, block, g, x, out, aux, "new input");
    const std::vector<uint8_t> before = bytes(out);

    // set_param between replays: the replay reads the new value.
    hspmn_tensor_desc pd;
    OK(hspmn_block_param_describe(block, "reflex.down", &pd));
    hspmn_tensor* w = make(ctx, HSPMN_DTYPE_F32, {pd.shape[0], pd.shape[1]}, HSPMN_MEMORY_HOST);
    OK(hspmn_block_get_param(block, "reflex.down", w));
    float* wp = nullptr;
    OK(hspmn_tensor_data(w, reinterpret_cast<void**>(&wp)));
    for (int64_t i = 0; i < pd.numel; ++i) wp[i] *= -2.0f;
    OK(hspmn_block_set_param(block, "reflex.down", w));
    OK(hspmn_graph_launch(g));
    OK(hspmn_context_synchronize(ctx));
    EXPECT(bytes(out) != before, "set_param between replays did not change out");
    launch_and_compare(ctx, block, g, x, out, aux, "after set_param");

    // A smaller forward reuses the scratch without regrowing it: the graph stays valid.
    hspmn_tensor* xs = device(ctx, HSPMN_DTYPE_BF16, {1, kS / 2, kD});
    hspmn_tensor* os = device(ctx, HSPMN_DTYPE_BF16, {1, kS / 2, kD});
    fill(xs, 2.0f);
    OK(hspmn_block_forward(block, &fp, xs, os, nullptr));
    launch_and_compare(ctx, block, g, x, out, aux, "after a smaller forward");

    // A second graph of the same block and shape on other tensors: both replay correctly.
    hspmn_tensor* x2 = device(ctx, HSPMN_DTYPE_BF16, {kB, kS, kD});
    hspmn_tensor* out2 = device(ctx, HSPMN_DTYPE_BF16, {kB, kS, kD});
    hspmn_tensor* aux2 = device(ctx, HSPMN_DTYPE_F32, {1});
    fill(x2, 3.0f);
    hspmn_graph* g2 = nullptr;
    OK(hspmn_graph_capture_forward(block, &fp, x2, out2, aux2, &g2));
    launch_and_compare(ctx, block, g2, x2, out2, aux2, "second graph");
    launch_and_compare(ctx, block, g, x, out, aux, "first graph after the second was captured");

    // 1,000 replays hold no new library memory.
    hspmn_alloc_stats s0, s1;
    OK(hspmn_alloc_stats_get(&s0));
    for (int i = 0; i < 1000; ++i) OK(hspmn_graph_launch(g));
    OK(hspmn_context_synchronize(ctx));
    OK(hspmn_alloc_stats_get(&s1));
    EXPECT(s1.live_bytes == s0.live_bytes, "1000 replays changed live_bytes by %lld",
           static_cast<long long>(s1.live_bytes - s0.live_bytes));
    launch_and_compare(ctx, block, g, x, out, aux, "after 1000 replays");

    // A replay drops what a training forward kept (it rewrites the scratch backward reads).
    hspmn_forward_params tp = hspmn_forward_default_params();
    tp.training = 1;
    OK(hspmn_block_forward(block, &tp, x2, out2, aux2));
    OK(hspmn_graph_destroy(g2));
    hspmn_graph* g3 = nullptr;
    OK(hspmn_graph_capture_forward(block, &fp, x2, out2, aux2, &g3));  // the training buffers exist now
    OK(hspmn_block_forward(block, &tp, x2, out2, aux2));                 // same shape: nothing regrows
    OK(hspmn_graph_launch(g3));
    hspmn_backward_params bw = hspmn_backward_default_params();
    EXPECT_STATUS(hspmn_block_backward(block, &bw, x2, nullptr, nullptr), HSPMN_ERR_STATE, "no training forward");
    launch_and_compare(ctx, block, g3, x2, out2, aux2, "after a training forward of the same shape");

    OK(hspmn_graph_destroy(g3));
    OK(hspmn_graph_destroy(g));
    for (hspmn_tensor* t : {w, xs, os, x2, out2, aux2}) OK(hspmn_tensor_destroy(t));
}

static void test_invalidation(hspmn_context* ctx) {
    const BlockFixture f(ctx, 2);
    hspmn_block* block = f.block;
    hspmn_tensor *x = f.x, *out = f.out;
    hspmn_tensor* xl = device(ctx, HSPMN_DTYPE_BF16, {kB, 2 * kS, kD});
    hspmn_tensor* ol = device(ctx, HSPMN_DTYPE_BF16, {kB, 2 * kS, kD});
    fill(x, 0.5f);
    fill(xl, 0.25f);
    hspmn_forward_params fp = hspmn_forward_default_params();
    hspmn_graph* g = nullptr;

    // A larger forward regrows the scratch.
    OK(hspmn_graph_capture_forward(block, &fp, x, out, nullptr, &g));
    OK(hspmn_block_forward(block, &fp, xl, ol, nullptr));
    EXPECT_STATUS(hspmn_graph_launch(g), HSPMN_ERR_STATE, "capture again");
    EXPECT_STATUS(hspmn_graph_launch(g), HSPMN_ERR_STATE, "the block's scratch moved since capture");
    OK(hspmn_graph_destroy(g));
    // Captured again after the larger forward: the scratch is big enough for both shapes now.
    OK(hspmn_graph_capture_forward(block, &fp, x, out, nullptr, &g));
    OK(hspmn_block_forward(block, &fp, xl, ol, nullptr));
    OK(hspmn_graph_launch(g));
    OK(hspmn_graph_destroy(g));

    // The block's first training forward allocates what inference never needed.
    OK(hspmn_graph_capture_forward(block, &fp, x, out, nullptr, &g));
    hspmn_forward_params tp = hspmn_forward_default_params();
    tp.training = 1;
    OK(hspmn_block_forward(block, &tp, x, out, nullptr));
    EXPECT_STATUS(hspmn_graph_launch(g), HSPMN_ERR_STATE, "capture again");
    OK(hspmn_graph_destroy(g));

    // The block's first route call sizes its own buffers.
    OK(hspmn_graph_capture_forward(block, &fp, x, out, nullptr, &g));
    hspmn_tensor* logits = device(ctx, HSPMN_DTYPE_F32, {kB, kS});
    OK(hspmn_block_route(block, &fp, x, nullptr, logits, nullptr, nullptr, nullptr, nullptr));
    EXPECT_STATUS(hspmn_graph_launch(g), HSPMN_ERR_STATE, "capture again");
    OK(hspmn_graph_destroy(g));

    for (hspmn_tensor* t : {xl, ol, logits}) OK(hspmn_tensor_destroy(t));
}

static void test_lifetimes_and_checks(hspmn_context* ctx) {
    const BlockFixture f(ctx, 3);
    hspmn_block* block = f.block;
    hspmn_tensor *x = f.x, *out = f.out, *aux = f.aux;
    hspmn_tensor* x_host = make(ctx, HSPMN_DTYPE_BF16, {kB, kS, kD}, HSPMN_MEMORY_HOST);
    hspmn_tensor* out_pinned = make(ctx, HSPMN_DTYPE_BF16, {kB, kS, kD}, HSPMN_MEMORY_PINNED);
    hspmn_tensor* aux_host = make(ctx, HSPMN_DTYPE_F32, {1}, HSPMN_MEMORY_HOST);
    fill(x, 0.0f);
    fill(x_host, 0.0f);
    hspmn_forward_params fp = hspmn_forward_default_params();
    hspmn_graph* g = nullptr;

    EXPECT_STATUS(hspmn_graph_capture_forward(block, &fp, x_host, out, aux, &g), HSPMN_ERR_MEMORY_KIND,
                  "x is HOST memory");
    EXPECT_STATUS(hspmn_graph_capture_forward(block, &fp, x, out_pinned, aux, &g), HSPMN_ERR_MEMORY_KIND,
                  "out is PINNED memory");
    EXPECT_STATUS(hspmn_graph_capture_forward(block, &fp, x, out, aux_host, &g), HSPMN_ERR_MEMORY_KIND,
                  "aux is HOST memory");
    fp.training = 1;
    EXPECT_STATUS(hspmn_graph_capture_forward(block, &fp, x, out, aux, &g), HSPMN_ERR_INVALID_ARGUMENT,
                  "params.training must be 0");
    fp.training = 0;
    EXPECT(g == nullptr, "a failed capture returned a graph");

    // NaN in x under REJECT: refused before the warm-up forward, nothing bound.
    std::vector<uint16_t> v(static_cast<size_t>(kB * kS * kD), bf16(1.0f));
    v[77] = 0x7fc0;
    OK(hspmn_tensor_copy_in(x, v.data(), static_cast<int64_t>(v.size() * 2)));
    EXPECT_STATUS(hspmn_graph_capture_forward(block, &fp, x, out, aux, &g), HSPMN_ERR_NON_FINITE, "x contains NaN");
    EXPECT(g == nullptr, "a failed capture returned a graph");
    fill(x, 0.0f);

    OK(hspmn_graph_capture_forward(block, &fp, x, out, aux, &g));
    EXPECT_STATUS(hspmn_tensor_destroy(x), HSPMN_ERR_STATE, "destroy the graph(s) first");
    EXPECT_STATUS(hspmn_tensor_destroy(out), HSPMN_ERR_STATE, "bound to 1 CUDA graph(s)");
    EXPECT_STATUS(hspmn_tensor_destroy(aux), HSPMN_ERR_STATE, "destroy the graph(s) first");
    EXPECT_STATUS(hspmn_block_destroy(block), HSPMN_ERR_STATE, "destroy the graph(s) first");
    EXPECT_STATUS(hspmn_context_destroy(ctx), HSPMN_ERR_STATE, "1 graph(s)");
    OK(hspmn_graph_launch(g));  // everything refused above is still usable
    OK(hspmn_context_synchronize(ctx));
    OK(hspmn_graph_destroy(g));

    for (hspmn_tensor* t : {x_host, out_pinned, aux_host}) OK(hspmn_tensor_destroy(t));
}

int main() {
    hspmn_context_params cp = hspmn_context_default_params();
    cp.backend = HSPMN_BACKEND_CUDA;
    hspmn_context* ctx = nullptr;
    hspmn_status s = hspmn_context_create(&cp, &ctx);
    if (s == HSPMN_ERR_NO_DEVICE) {
        std::printf("skipped: no device (%s)\n", hspmn_last_error());
        return 0;
    }
    if (s != HSPMN_OK) {
        std::printf("FAIL: hspmn_context_create: %s: %s\n", hspmn_status_name(s), hspmn_last_error());
        return 1;
    }
    test_replay(ctx);
    test_invalidation(ctx);
    test_lifetimes_and_checks(ctx);
    OK(hspmn_context_destroy(ctx));
    hspmn_alloc_stats st;
    OK(hspmn_alloc_stats_get(&st));
    EXPECT(st.live_tensors == 0 && st.live_blocks == 0 && st.live_contexts == 0 && st.live_bytes == 0,
           "leak: %lld tensors, %lld blocks, %lld bytes live", static_cast<long long>(st.live_tensors),
           static_cast<long long>(st.live_blocks), static_cast<long long>(st.live_bytes));
    return report();
}
