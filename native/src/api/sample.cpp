// hspmn_sample (hspmn.h "sampling"): every parameter row and tensor is checked here; the backend's
// sample_tokens reports bad logits rows through its status word, which becomes a typed error.
#include <climits>

#include "../core/error.h"
#include "../core/objects.h"
#include "../core/sampling.h"
#include "checks.h"
#include "guard.h"
#include "hspmn.h"

using namespace hspmn;

namespace {

// Memory of the backend's internal kind, freed on scope exit.
class Scratch {
public:
    Scratch(Backend& be, std::size_t bytes) : be_(be), bytes_(bytes), p_(be.raw_alloc(bytes)) {}
    ~Scratch() { be_.raw_free(p_, bytes_); }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    void* get() const { return p_; }

private:
    Backend& be_;
    std::size_t bytes_;
    void* p_;
};

}  // namespace

extern "C" {

hspmn_sampling_params hspmn_sampling_default_params(void) {
    hspmn_sampling_params p{};  // greedy (temperature 0), no top-k limit, seed 0
    p.top_p = 1.0f;
    p.draw = 1;
    return p;
}

hspmn_status hspmn_sample(hspmn_context* ctx, const hspmn_tensor* logits, const hspmn_sampling_params* params,
                          hspmn_tensor* tokens) {
    return guarded("hspmn_sample", [&] {
        check_not_null(ctx, "ctx");
        check_tensor(logits, "logits", ctx);
        check_dtype(logits, "logits", HSPMN_DTYPE_F32);
        if (logits->ndim != 2 || logits->shape[1] > sampling::kMaxVocab)
            fail(HSPMN_ERR_SHAPE, "logits: expected shape [n, V] with V <= %lld, got %s",
                 static_cast<long long>(sampling::kMaxVocab), shape_string(logits).c_str());
        const int64_t n = logits->shape[0], V = logits->shape[1];
        if (n >= INT32_MAX)  // the status word is 1 + a row, an i32
            fail(HSPMN_ERR_SHAPE, "logits: %lld rows; at most %d", static_cast<long long>(n), INT32_MAX - 1);
        check_not_null(params, "params");
        check_arg(tokens, "tokens", ctx, HSPMN_DTYPE_I32, {n});
        for (int64_t r = 0; r < n; ++r) check_sampling_params(params[r], r);
        BusyGuard busy(ctx->busy, "context");

        // The op works on internal memory: tensors of another kind (host or pinned on CUDA) and the
        // host params go through scratch.
        Backend& be = *ctx->backend;
        const int32_t internal = be.internal_memory();
        const std::size_t logit_bytes = static_cast<std::size_t>(logits->nbytes);
        const std::size_t token_bytes = static_cast<std::size_t>(tokens->nbytes);
        const std::size_t param_bytes = sizeof(hspmn_sampling_params) * static_cast<std::size_t>(n);
        const bool host_internal = internal == HSPMN_MEMORY_HOST;
        const bool stage_logits = !host_internal && logits->memory != internal;
        const bool stage_tokens = !host_internal && tokens->memory != internal;
        Scratch work(be, (host_internal ? 0 : param_bytes) + sizeof(int32_t) + (stage_logits ? logit_bytes : 0) +
                             (stage_tokens ? token_bytes : 0));
        char* next = static_cast<char*>(work.get());
        const hspmn_sampling_params* p_dev = params;
        if (!host_internal) {
            be.copy_from_host_raw(next, params, param_bytes);
            p_dev = reinterpret_cast<const hspmn_sampling_params*>(next);
            next += param_bytes;
        }
        const float* x = static_cast<const float*>(logits->data);
        if (stage_logits) {
            be.copy_from_host_raw(next, logits->data, logit_bytes);
            x = reinterpret_cast<const float*>(next);
            next += logit_bytes;
        }
        int32_t* tok = static_cast<int32_t*>(tokens->data);
        if (stage_tokens) {
            tok = reinterpret_cast<int32_t*>(next);
            next += token_bytes;
        }
        int32_t* status_dev = reinterpret_cast<int32_t*>(next);

        be.sample_tokens(x, n, V, p_dev, tok, status_dev);

        int32_t status = 0;
        be.copy_to_host_raw(&status, status_dev, sizeof status);
        if (stage_tokens) be.copy_to_host_raw(tokens->data, tok, token_bytes);
        if (status == 0) return;
        const int64_t row = status - 1;
        int32_t code = 0;
        be.copy_to_host_raw(&code, tok + row, sizeof code);
        const long long r = static_cast<long long>(row);
        switch (code) {
            case Backend::kSampleNaN: fail(HSPMN_ERR_NON_FINITE, "logits row %lld holds NaN", r);
            case Backend::kSamplePosInf: fail(HSPMN_ERR_NON_FINITE, "logits row %lld holds +Inf", r);
            case Backend::kSampleAllNegInf: fail(HSPMN_ERR_NON_FINITE, "every logit of row %lld is -Inf", r);
            default: fail(HSPMN_ERR_INTERNAL, "sample_tokens reported row %lld with token %d", r, code);
        }
    });
}

}  // extern "C"
