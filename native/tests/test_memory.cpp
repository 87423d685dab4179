// A configuration too large for memory is refused before anything is allocated (core/footprint.h):
// model, block, decoder and tensor creation, and training forwards of a model and of a block, give
// HSPMN_ERR_OUT_OF_MEMORY with the bytes needed and available, the library's live and peak bytes
// unchanged. Every refusal runs under an address-space limit (setrlimit RLIMIT_AS) a little above the
// process's size, so a missing check fails the allocation instead of growing the process until the
// kernel kills it (this machine is shared). The estimates themselves are compared with the peaks the
// tracked allocator measures on a small model (footprint.cpp is compiled in: libhspmn hides it).
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../src/core/footprint.h"
#include "abi_check.h"
#include "hspmn.h"

namespace {

// Virtual size of this process, bytes.
unsigned long long vm_size() {
    unsigned long long pages = 0;
    if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
        if (std::fscanf(f, "%llu", &pages) != 1) pages = 0;
        std::fclose(f);
    }
    return pages * static_cast<unsigned long long>(sysconf(_SC_PAGE_SIZE));
}

// Limits the address space to its current size + `extra` for the scope's life.
class AddressSpaceLimit {
public:
    explicit AddressSpaceLimit(unsigned long long extra) {
        getrlimit(RLIMIT_AS, &old_);
        rlimit r = old_;
        r.rlim_cur = static_cast<rlim_t>(vm_size() + extra);
        if (old_.rlim_max != RLIM_INFINITY && r.rlim_cur > old_.rlim_max) r.rlim_cur = old_.rlim_max;
        ok_ = setrlimit(RLIMIT_AS, &r) == 0;
        if (!ok_) std::fprintf(stderr, "setrlimit(RLIMIT_AS) failed: the refusals are checked without a safety net\n");
    }
    ~AddressSpaceLimit() { setrlimit(RLIMIT_AS, &old_); }

private:
    rlimit old_{};
    bool ok_ = false;
};

constexpr unsigned long long kGiB = 1ull << 30;

hspmn_alloc_stats stats() {
    hspmn_alloc_stats s{};
    OK(hspmn_alloc_stats_get(&s));
    return s;
}

// The call failed with OUT_OF_MEMORY naming `fragment`, giving bytes needed and available, and the
// library holds and peaked at what it did before.
#define EXPECT_REFUSED(call, fragment)                                                                  \
    do {                                                                                                \
        OK(hspmn_alloc_stats_reset_peak());                                                             \
        const hspmn_alloc_stats before_ = stats();                                                      \
        EXPECT_STATUS(call, HSPMN_ERR_OUT_OF_MEMORY, fragment);                                         \
        const std::string msg_ = hspmn_last_error();                                                    \
        EXPECT(msg_.find("bytes (") != std::string::npos && msg_.find("are available") != std::string::npos); \
        EXPECT(msg_.find("nothing was allocated") != std::string::npos);                                \
        const hspmn_alloc_stats after_ = stats();                                                       \
        EXPECT(after_.live_bytes == before_.live_bytes);                                                \
        EXPECT(after_.peak_bytes == before_.peak_bytes);                                                \
        std::printf("  refused: %s\n", msg_.c_str());                                                   \
    } while (0)

// The issue's `hspmn train --dim 32768 --heads 2 --kv-heads 1`: about 12.9e9 parameters per layer.
hspmn_model_params huge_model() { return model_params(256, 1, 32768, 2, 1, 4); }

hspmn_model_params small_model(int32_t routing) {
    hspmn_model_params p = model_params(256, 2, 64, 4, 2, 4);
    p.block.routing = routing;
    return p;
}

// `steps` training steps (forward, backward, AdamW) on tok -> tgt, with residual dropout: it allocates
// nothing the estimates do not count.
void train_steps(hspmn_model* m, hspmn_tensor* tok, hspmn_tensor* tgt, int steps) {
    hspmn_model_forward_params fp = hspmn_model_forward_default_params();
    fp.training = 1;
    fp.dropout = 0.1f;
    for (int step = 0; step < steps; ++step) {
        fp.step = step;
        OK(hspmn_model_forward(m, &fp, tok, tgt, nullptr, nullptr));
        hspmn_model_backward_params bp = hspmn_model_backward_default_params();
        OK(hspmn_model_backward(m, &bp));
        hspmn_adamw_params ap = hspmn_adamw_default_params();
        ap.step = step + 1;
        hspmn_adamw_result r{};
        OK(hspmn_model_adamw_step(m, &ap, &r));
    }
}

void test_refusals() {
    hspmn_context* ctx = make_ctx(2);
    {
        AddressSpaceLimit limit(2 * kGiB);
        hspmn_model* m = nullptr;
        hspmn_model_params p = huge_model();
        EXPECT_REFUSED(hspmn_model_create(ctx, &p, 1, &m), "hspmn_model_create: out of memory: a model of 1 layer, dim 32768");
        EXPECT(m == nullptr);

        hspmn_block* b = nullptr;
        EXPECT_REFUSED(hspmn_block_create(ctx, &p.block, 1, &b), "hspmn_block_create: out of memory: a block of dim 32768");
        EXPECT(b == nullptr);

        hspmn_tensor* t = nullptr;
        const int64_t shape[2] = {1 << 20, 1024};  // 4 GiB of f32
        EXPECT_REFUSED(hspmn_tensor_create(ctx, HSPMN_DTYPE_F32, HSPMN_MEMORY_HOST, 2, shape, &t),
                       "hspmn_tensor_create: out of memory: a f32 tensor of shape [1048576, 1024]");
        EXPECT(t == nullptr);
    }

    hspmn_model_params p = small_model(HSPMN_ROUTING_THRESHOLD);
    hspmn_model* m = nullptr;
    OK(hspmn_model_create(ctx, &p, 1, &m));
    {
        // max_seqs x max_len x KV x 4 bytes x 2 x 2 layers = 64 x 2^20 x 32 x 16 = 32 GiB of caches.
        AddressSpaceLimit limit(2 * kGiB);
        hspmn_decoder* dec = nullptr;
        EXPECT_REFUSED(hspmn_decoder_create(m, 64, int64_t(1) << 20, &dec),
                       "hspmn_decoder_create: out of memory: a decoder of 64 sequences x 1048576 tokens");
        EXPECT(dec == nullptr);
        OK(hspmn_decoder_create(m, 4, 1024, &dec));  // what fits is still made
        OK(hspmn_decoder_destroy(dec));
    }
    {
        // The issue's `--batch 100000` at a small scale: [4096, 1024] tokens need ~10 GiB of activations.
        hspmn_tensor* tok = make(ctx, HSPMN_DTYPE_I32, {4096, 1024});
        hspmn_tensor* tgt = make(ctx, HSPMN_DTYPE_I32, {4096, 1024});
        fill_tokens(tok, 256);
        fill_tokens(tgt, 256);
        hspmn_tensor* loss = make(ctx, HSPMN_DTYPE_F32, {2});
        hspmn_model_forward_params fp = hspmn_model_forward_default_params();
        fp.training = 1;
        AddressSpaceLimit limit(2 * kGiB);
        EXPECT_REFUSED(hspmn_model_forward(m, &fp, tok, tgt, loss, nullptr),
                       "hspmn_model_forward: out of memory: a training forward over [B, S] = [4096, 1024]");
        const hspmn_model_backward_params bp = hspmn_model_backward_default_params();
        EXPECT_STATUS(hspmn_model_backward(m, &bp), HSPMN_ERR_STATE, "no training forward");
        OK(hspmn_tensor_destroy(tok));
        OK(hspmn_tensor_destroy(tgt));
        OK(hspmn_tensor_destroy(loss));
    }
    OK(hspmn_model_destroy(m));

    {
        // A lone block's training forward over [64, 4096] at dim 64: ~1.3 GiB kept for backward.
        hspmn_block_params bp = p.block;
        hspmn_block* b = nullptr;
        OK(hspmn_block_create(ctx, &bp, 1, &b));
        hspmn_tensor* x = make(ctx, HSPMN_DTYPE_BF16, {64, 4096, 64});
        hspmn_tensor* out = make(ctx, HSPMN_DTYPE_BF16, {64, 4096, 64});
        hspmn_forward_params fp = hspmn_forward_default_params();
        fp.training = 1;
        {
            AddressSpaceLimit limit(kGiB / 2);
            EXPECT_REFUSED(hspmn_block_forward(b, &fp, x, out, nullptr),
                           "hspmn_block_forward: out of memory: a training forward of this block over [B, S] = [64, 4096]");
        }
        fp.training = 0;  // inference keeps nothing: not this check's business
        OK(hspmn_tensor_destroy(x));
        OK(hspmn_tensor_destroy(out));
        OK(hspmn_block_destroy(b));
    }
    OK(hspmn_context_destroy(ctx));
}

// The estimates against what the tracked allocator measures: the model's steady state after create,
// and the peak above it over training steps (forward, backward, AdamW).
void check_estimates(int32_t routing, const char* name) {
    hspmn_context* ctx = make_ctx(2);
    hspmn_model_params p = small_model(routing);
    const int64_t B = 4, S = 256;
    const hspmn::Footprint model_est = hspmn::model_footprint(p, HSPMN_BACKEND_CPU);
    const hspmn::Footprint rows_est = hspmn::model_rows_footprint(p, B, S, true, HSPMN_BACKEND_CPU, 2);  // make_ctx(2)

    OK(hspmn_alloc_stats_reset_peak());
    const hspmn_alloc_stats s0 = stats();
    hspmn_model* m = nullptr;
    OK(hspmn_model_create(ctx, &p, 3, &m));
    const hspmn_alloc_stats s1 = stats();
    const double model_peak = static_cast<double>(s1.peak_bytes - s0.live_bytes);

    hspmn_tensor* tok = make(ctx, HSPMN_DTYPE_I32, {B, S});
    hspmn_tensor* tgt = make(ctx, HSPMN_DTYPE_I32, {B, S});
    fill_tokens(tok, 256);
    fill_tokens(tgt, 256);
    OK(hspmn_alloc_stats_reset_peak());
    const hspmn_alloc_stats s2 = stats();
    train_steps(m, tok, tgt, 3);
    const double rows_peak = static_cast<double>(stats().peak_bytes - s2.live_bytes);
    std::printf("  %s: model estimate %.0f, measured peak %.0f (%.2f); training estimate %.0f, measured peak %.0f (%.2f)\n",
                name, model_est.host, model_peak, model_est.host / model_peak, rows_est.host, rows_peak,
                rows_est.host / rows_peak);
    // Never below what is measured (a refusal must not be late); top-k counts routed rows exactly, so
    // its estimate stays close; threshold counts every token as routed.
    EXPECT(model_est.host >= model_peak && model_est.host <= 1.25 * model_peak);
    EXPECT(rows_est.host >= rows_peak);
    EXPECT(rows_est.host <= (routing == HSPMN_ROUTING_TOPK ? 1.1 : 1.5) * rows_peak);
    EXPECT(model_est.device == 0.0 && rows_est.device == 0.0);

    OK(hspmn_tensor_destroy(tok));
    OK(hspmn_tensor_destroy(tgt));
    OK(hspmn_model_destroy(m));

    // The decoder's caches.
    OK(hspmn_model_create(ctx, &p, 3, &m));
    OK(hspmn_alloc_stats_reset_peak());
    const hspmn_alloc_stats s3 = stats();
    hspmn_decoder* dec = nullptr;
    if (routing == HSPMN_ROUTING_THRESHOLD) {
        OK(hspmn_decoder_create(m, 8, 512, &dec));
        const double dec_live = static_cast<double>(stats().live_bytes - s3.live_bytes);
        const double dec_est = hspmn::decoder_footprint(p, 8, 512, HSPMN_BACKEND_CPU).host;
        std::printf("  %s: decoder estimate %.0f, measured %.0f (%.2f)\n", name, dec_est, dec_live, dec_est / dec_live);
        // The estimate includes a step's scratch, which the first step allocates, not the creation.
        EXPECT(dec_est >= dec_live && dec_est <= 1.2 * dec_live);
        OK(hspmn_decoder_destroy(dec));
    }
    OK(hspmn_model_destroy(m));
    OK(hspmn_context_destroy(ctx));
}

// The same on CUDA when a device is present ("skipped" otherwise): the model's device bytes after create,
// and the device peak of training steps, against the CUDA estimates (each block keeps its activations, the
// context one backward arena for all blocks, so the estimate mirrors the allocations; BC = B*S rows for
// threshold routing).
void check_estimates_cuda(int32_t routing, const char* name) {
    hspmn_context_params cp = hspmn_context_default_params();
    cp.backend = HSPMN_BACKEND_CUDA;
    hspmn_context* ctx = nullptr;
    if (hspmn_context_create(&cp, &ctx) != HSPMN_OK) {
        std::printf("  cuda %s: skipped (%s)\n", name, hspmn_last_error());
        return;
    }
    hspmn_model_params p = small_model(routing);
    p.block.dim = 256;
    const int64_t B = 4, S = 512;
    const hspmn::Footprint model_est = hspmn::model_footprint(p, HSPMN_BACKEND_CUDA);
    const hspmn::Footprint rows_est = hspmn::model_rows_footprint(p, B, S, true, HSPMN_BACKEND_CUDA, 1);
    const hspmn_alloc_stats s0 = stats();
    hspmn_model* m = nullptr;
    OK(hspmn_model_create(ctx, &p, 3, &m));
    const double model_live = static_cast<double>(stats().live_bytes - s0.live_bytes);
    hspmn_tensor* tok = nullptr;
    hspmn_tensor* tgt = nullptr;
    const int64_t shape[2] = {B, S};
    OK(hspmn_tensor_create(ctx, HSPMN_DTYPE_I32, HSPMN_MEMORY_DEVICE, 2, shape, &tok));
    OK(hspmn_tensor_create(ctx, HSPMN_DTYPE_I32, HSPMN_MEMORY_DEVICE, 2, shape, &tgt));
    fill_tokens(tok, 256);
    fill_tokens(tgt, 256);
    OK(hspmn_context_synchronize(ctx));
    OK(hspmn_alloc_stats_reset_peak());
    const hspmn_alloc_stats s2 = stats();
    train_steps(m, tok, tgt, 2);
    OK(hspmn_context_synchronize(ctx));
    const double rows_peak = static_cast<double>(stats().peak_bytes - s2.live_bytes);
    std::printf("  cuda %s: model estimate %.0f (device), measured %.0f (%.2f); training estimate %.0f, measured peak "
                "%.0f (%.2f)\n",
                name, model_est.device, model_live, model_est.device / model_live, rows_est.device, rows_peak,
                rows_est.device / rows_peak);
    EXPECT(model_est.device >= 0.97 * model_live && model_est.device <= 1.25 * model_live);
    EXPECT(rows_est.device >= 0.97 * rows_peak && rows_est.device <= 1.5 * rows_peak);
    OK(hspmn_tensor_destroy(tok));
    OK(hspmn_tensor_destroy(tgt));
    OK(hspmn_model_destroy(m));
    OK(hspmn_context_destroy(ctx));
}

}  // namespace

int main() {
    std::printf("refusals:\n");
    test_refusals();
    std::printf("estimates:\n");
    check_estimates(HSPMN_ROUTING_TOPK, "top-k");
    check_estimates(HSPMN_ROUTING_THRESHOLD, "threshold");
    check_estimates_cuda(HSPMN_ROUTING_TOPK, "top-k");
    check_estimates_cuda(HSPMN_ROUTING_THRESHOLD, "threshold");
    return report();
}
