// Cached decoding entry points (hspmn.h "cached decoding"): every argument checked here, slots and
// token ids included, before the decoder runs.
#include <memory>
#include <string>

#include "../core/alloc.h"
#include "../core/error.h"
#include "../core/footprint.h"
#include "../core/objects.h"
#include "../model/decoder.h"
#include "checks.h"
#include "guard.h"
#include "hspmn.h"

using namespace hspmn;

namespace {

void check_decoder(const hspmn_decoder* d) {
    if (!d) fail(HSPMN_ERR_INVALID_ARGUMENT, "dec is NULL");
}

void check_slot(const hspmn_decoder* d, int32_t slot) {
    if (slot < 0 || slot >= d->impl->max_seqs())
        fail(HSPMN_ERR_INVALID_ARGUMENT, "slot (%d) must be in [0, %d)", slot, d->impl->max_seqs());
}

// slots[0..n): slots of the decoder, none twice, each with room for T more tokens.
void check_slots(const hspmn_decoder* d, const int32_t* slots, int64_t n, int64_t T) {
    const int32_t max_seqs = d->impl->max_seqs();
    Buffer<uint8_t> seen(static_cast<std::size_t>(max_seqs));
    seen.fill(0);
    for (int64_t j = 0; j < n; ++j) {
        const int32_t s = slots[j];
        if (s < 0 || s >= max_seqs)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "slots[%lld] = %d is not a slot in [0, %d)", static_cast<long long>(j), s,
                 max_seqs);
        if (seen[s]) fail(HSPMN_ERR_INVALID_ARGUMENT, "slots[%lld] = %d appears twice", static_cast<long long>(j), s);
        seen[s] = 1;
        if (d->impl->length(s) >= d->impl->max_len())
            fail(HSPMN_ERR_INVALID_ARGUMENT, "slot %d is full: it holds max_len = %lld tokens", s,
                 static_cast<long long>(d->impl->max_len()));
        if (d->impl->length(s) + T > d->impl->max_len())
            fail(HSPMN_ERR_INVALID_ARGUMENT, "slot %d holds %lld tokens; %lld more exceed max_len %lld", s,
                 static_cast<long long>(d->impl->length(s)), static_cast<long long>(T),
                 static_cast<long long>(d->impl->max_len()));
    }
}

}  // namespace

extern "C" {

hspmn_status hspmn_decoder_create(hspmn_model* model, int32_t max_seqs, int64_t max_len, hspmn_decoder** out) {
    return guarded("hspmn_decoder_create", [&] {
        clear_out(out);
        check_not_null(model, "model");
        if (model->impl->params().block.routing != HSPMN_ROUTING_THRESHOLD)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "the model routes by top-k, which depends on the whole sequence and "
                 "cannot decode token by token; cached decoding needs routing = HSPMN_ROUTING_THRESHOLD");
        if (max_seqs < 1 || max_seqs > 65536)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "max_seqs (%d) must be in [1, 65536]", max_seqs);
        if (max_len < 1 || max_len > (int64_t{1} << 31) - 1)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "max_len (%lld) must be in [1, 2^31 - 1]", static_cast<long long>(max_len));
        BusyPair busy(model->busy, "model", model->ctx->busy);
        {
            const hspmn_model_params& p = model->impl->params();
            const std::string what = format("a decoder of %d sequences x %lld tokens (K/V "
                                            "caches and conv history of %d layers)",
                                            max_seqs, static_cast<long long>(max_len), p.num_layers);
            require_memory(*model->ctx->backend, decoder_footprint(p, max_seqs, max_len, model->ctx->backend->kind()),
                           what.c_str());
        }
        std::unique_ptr<Decoder> impl(new Decoder(*model->impl, max_seqs, max_len));
        hspmn_decoder* d = new hspmn_decoder();
        d->model = model;
        d->impl = impl.release();
        model->decoders.fetch_add(1);
        *out = d;
    });
}

hspmn_status hspmn_decoder_destroy(hspmn_decoder* dec) {
    return guarded("hspmn_decoder_destroy", [&] {
        if (!dec) return;
        hspmn_model* model = dec->model;
        BusyPair busy(model->busy, "model", model->ctx->busy);
        delete dec->impl;
        delete dec;
        model->decoders.fetch_sub(1);
    });
}

hspmn_status hspmn_decoder_reset(hspmn_decoder* dec, int32_t slot) {
    return guarded("hspmn_decoder_reset", [&] {
        check_decoder(dec);
        check_slot(dec, slot);
        BusyPair busy(dec->model->busy, "model", dec->model->ctx->busy);
        dec->impl->reset(slot);
    });
}

hspmn_status hspmn_decoder_length(const hspmn_decoder* dec, int32_t slot, int64_t* out) {
    return guarded("hspmn_decoder_length", [&] {
        check_decoder(dec);
        check_not_null(out, "out");
        check_slot(dec, slot);
        *out = dec->impl->length(slot);
    });
}

hspmn_status hspmn_decoder_append(hspmn_decoder* dec, const hspmn_tensor* slots, const hspmn_tensor* tokens,
                                  hspmn_tensor* logits, hspmn_tensor* routed) {
    return guarded("hspmn_decoder_append", [&] {
        check_decoder(dec);
        hspmn_context* ctx = dec->model->ctx;
        const hspmn_model_params mp = dec->model->impl->params();
        check_tensor(slots, "slots", ctx);
        check_dtype(slots, "slots", HSPMN_DTYPE_I32);
        if (slots->ndim != 1) fail(HSPMN_ERR_SHAPE, "slots: expected shape [n], got %s", shape_string(slots).c_str());
        const int64_t n = slots->shape[0];
        check_tensor(tokens, "tokens", ctx);
        check_dtype(tokens, "tokens", HSPMN_DTYPE_I32);
        if (tokens->ndim != 2 || tokens->shape[0] != n)
            fail(HSPMN_ERR_SHAPE, "tokens: expected shape [%lld, T] (one row per slot), got %s",
                 static_cast<long long>(n), shape_string(tokens).c_str());
        const int64_t T = tokens->shape[1];
        if (logits) check_arg(logits, "logits", ctx, HSPMN_DTYPE_F32, {n, mp.vocab_size});
        if (routed) check_arg(routed, "routed", ctx, HSPMN_DTYPE_I32, {n, T, mp.num_layers});
        BusyPair busy(dec->model->busy, "model", ctx->busy);
        Buffer<int32_t> s(static_cast<std::size_t>(n)), tok(static_cast<std::size_t>(n * T));
        ctx->backend->copy_to_host(slots, s.data());
        ctx->backend->copy_to_host(tokens, tok.data());
        check_slots(dec, s.data(), n, T);
        for (int64_t k = 0; k < n * T; ++k)
            if (tok[k] < 0 || tok[k] >= mp.vocab_size)
                fail(HSPMN_ERR_INVALID_ARGUMENT, "tokens[%lld, %lld] = %d is not a token id in [0, %d)",
                     static_cast<long long>(k / T), static_cast<long long>(k % T), tok[k], mp.vocab_size);
        dec->impl->append(s.data(), n, tok.data(), T, logits, routed);
    });
}

hspmn_status hspmn_decoder_step(hspmn_decoder* dec, int32_t n, const int32_t* slots, const int32_t* tokens,
                                const hspmn_sampling_params* params, int32_t* next, hspmn_tensor* logits) {
    return guarded("hspmn_decoder_step", [&] {
        check_decoder(dec);
        hspmn_context* ctx = dec->model->ctx;
        const hspmn_model_params mp = dec->model->impl->params();
        const int32_t max_seqs = dec->impl->max_seqs();
        if (n < 1 || n > max_seqs) fail(HSPMN_ERR_INVALID_ARGUMENT, "n (%d) must be in [1, max_seqs = %d]", n, max_seqs);
        if (!slots || !tokens || !params || !next)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "slots, tokens, params and next must not be NULL");
        if (logits) check_arg(logits, "logits", ctx, HSPMN_DTYPE_F32, {n, mp.vocab_size});
        check_slots(dec, slots, n, 1);
        for (int32_t j = 0; j < n; ++j) {
            if (tokens[j] < 0 || tokens[j] >= mp.vocab_size)
                fail(HSPMN_ERR_INVALID_ARGUMENT, "tokens[%d] = %d is not a token id in [0, %d)", j, tokens[j],
                     mp.vocab_size);
            check_sampling_params(params[j], j);
        }
        BusyPair busy(dec->model->busy, "model", ctx->busy);
        dec->impl->step(n, slots, tokens, params, next, logits);
    });
}

hspmn_status hspmn_decoder_capture(hspmn_decoder* dec, const int32_t* batch_sizes, int32_t count) {
    return guarded("hspmn_decoder_capture", [&] {
        check_decoder(dec);
        if (count < 1 || count > 64) fail(HSPMN_ERR_INVALID_ARGUMENT, "count (%d) must be in [1, 64]", count);
        check_not_null(batch_sizes, "batch_sizes");
        BusyPair busy(dec->model->busy, "model", dec->model->ctx->busy);
        dec->impl->capture(batch_sizes, count);
    });
}

}  // extern "C"
