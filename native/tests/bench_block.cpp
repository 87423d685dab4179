// Times one block's forward (inference and training) and forward + backward on the CPU backend.
//   bench_block [B S D H Hkv mlp_ratio threads reps]   defaults: 2 512 256 4 2 4 2 5
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <vector>

#include "hspmn.h"

#define CHECK(call)                                                                              \
    do {                                                                                         \
        hspmn_status s_ = (call);                                                                \
        if (s_ != HSPMN_OK) {                                                                    \
            std::fprintf(stderr, "%s failed: %s: %s\n", #call, hspmn_status_name(s_), hspmn_last_error()); \
            return 1;                                                                            \
        }                                                                                        \
    } while (0)

static double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char** argv) {
    int64_t a[8] = {2, 512, 256, 4, 2, 4, 2, 5};
    for (int i = 1; i < argc && i <= 8; ++i) a[i - 1] = std::atoll(argv[i]);
    const int64_t B = a[0], S = a[1], D = a[2];
    hspmn_context_params cp = hspmn_context_default_params();
    cp.backend = HSPMN_BACKEND_CPU;
    cp.num_threads = static_cast<int32_t>(a[6]);
    hspmn_context* ctx;
    CHECK(hspmn_context_create(&cp, &ctx));
    hspmn_block_params bp = hspmn_block_default_params();
    bp.dim = static_cast<int32_t>(D);
    bp.num_heads = static_cast<int32_t>(a[3]);
    bp.num_kv_heads = static_cast<int32_t>(a[4]);
    bp.mlp_ratio = static_cast<int32_t>(a[5]);
    hspmn_block* block;
    CHECK(hspmn_block_create(ctx, &bp, 7, &block));
    int64_t shape[3] = {B, S, D};
    hspmn_tensor *x, *out, *d_out, *d_x, *aux, *d_aux;
    CHECK(hspmn_tensor_create(ctx, HSPMN_DTYPE_BF16, HSPMN_MEMORY_HOST, 3, shape, &x));
    CHECK(hspmn_tensor_create(ctx, HSPMN_DTYPE_BF16, HSPMN_MEMORY_HOST, 3, shape, &out));
    CHECK(hspmn_tensor_create(ctx, HSPMN_DTYPE_BF16, HSPMN_MEMORY_HOST, 3, shape, &d_out));
    CHECK(hspmn_tensor_create(ctx, HSPMN_DTYPE_BF16, HSPMN_MEMORY_HOST, 3, shape, &d_x));
    int64_t one = 1;
    CHECK(hspmn_tensor_create(ctx, HSPMN_DTYPE_F32, HSPMN_MEMORY_HOST, 1, &one, &aux));
    CHECK(hspmn_tensor_create(ctx, HSPMN_DTYPE_F32, HSPMN_MEMORY_HOST, 1, &one, &d_aux));
    // x, d_out: a fixed pseudo-random pattern in bf16 (sin of a hash), so timings do not see denormals.
    std::vector<uint16_t> v(static_cast<size_t>(B * S * D));
    for (size_t i = 0; i < v.size(); ++i) {
        float f = std::sin(static_cast<float>(i) * 0.7548776f) * 1.5f;
        uint32_t u;
        std::memcpy(&u, &f, 4);
        v[i] = static_cast<uint16_t>(u >> 16);
    }
    CHECK(hspmn_tensor_copy_in(x, v.data(), static_cast<int64_t>(v.size() * 2)));
    CHECK(hspmn_tensor_copy_in(d_out, v.data(), static_cast<int64_t>(v.size() * 2)));

    const int reps = static_cast<int>(a[7]);
    hspmn_forward_params inf = hspmn_forward_default_params();
    hspmn_forward_params tr = hspmn_forward_default_params();
    tr.training = 1;
    hspmn_backward_params bw = hspmn_backward_default_params();
    double best_inf = 1e30, best_tr = 1e30, best_fb = 1e30;
    for (int r = 0; r < reps + 1; ++r) {  // the first round warms caches and the pool
        double t0 = now_ms();
        CHECK(hspmn_block_forward(block, &inf, x, out, aux));
        double t1 = now_ms();
        CHECK(hspmn_block_forward(block, &tr, x, out, aux));
        double t2 = now_ms();
        CHECK(hspmn_block_backward(block, &bw, d_out, d_aux, d_x));
        double t3 = now_ms();
        if (r == 0) continue;
        best_inf = std::min(best_inf, t1 - t0);
        best_tr = std::min(best_tr, t2 - t1);
        best_fb = std::min(best_fb, t3 - t1);
    }
    hspmn_alloc_stats st;
    CHECK(hspmn_alloc_stats_get(&st));
    std::printf("B=%lld S=%lld D=%lld H=%lld Hkv=%lld F=%lld threads=%lld (best of %d)\n", (long long)B, (long long)S,
                (long long)D, (long long)a[3], (long long)a[4], (long long)(a[5] * D), (long long)a[6], reps);
    std::printf("forward (inference)      %8.1f ms\n", best_inf);
    std::printf("forward (training)       %8.1f ms\n", best_tr);
    std::printf("forward + backward       %8.1f ms\n", best_fb);
    std::printf("peak library memory      %8.1f MiB\n", st.peak_bytes / 1048576.0);
    hspmn_tensor* ts[] = {x, out, d_out, d_x, aux, d_aux};
    for (auto* t : ts) CHECK(hspmn_tensor_destroy(t));
    CHECK(hspmn_block_destroy(block));
    CHECK(hspmn_context_destroy(ctx));
    return 0;
}
