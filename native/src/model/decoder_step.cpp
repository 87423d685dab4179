// Decoder::step (hspmn_decoder_step): one token for each of n slots, the next token sampled on the
// backend, so a step returns n ids and nothing else. Everything a step needs from the host (slot,
// position, token and sampling parameters of each row) goes into one staging buffer that a single
// copy uploads; the embedding, every block's decode step, the final norm, the head and sample_tokens
// follow on the stream, and one copy brings back the ids and a status word. On CUDA the whole
// sequence is recorded per batch bucket as one graph (capture): a step is then one memcpy of its
// staging, one graph launch and one stream sync.
//
// A bucket larger than the step pads with rows of slot -1, which the blocks' decode_step ignores
// (no cache read or written) and which sample greedily into ids nobody reads.
#include <algorithm>
#include <cstring>

#include "../core/error.h"
#include "../core/objects.h"
#include "decoder.h"

namespace hspmn {

namespace {

std::size_t align8(std::size_t x) { return (x + 7) / 8 * 8; }

}  // namespace

Decoder::Layout Decoder::layout(int64_t nb) {
    const auto r = static_cast<std::size_t>(nb);
    Layout l{};
    l.pos = r * 4;
    l.token = 2 * r * 4;
    l.params = align8(3 * r * 4);
    l.bytes = l.params + r * sizeof(hspmn_sampling_params);
    return l;
}

Decoder::~Decoder() {
    drop_graphs();
    if (step_.in_host) be_.staging_free(step_.in_host, step_.in_bytes);
    if (step_.out_host) be_.staging_free(step_.out_host, step_.out_bytes);
}

void Decoder::drop_graphs() noexcept {
    for (GraphImpl* g : graphs_) delete g;
    graphs_.clear();
}

// Buffers for `rows` rows. They only grow before a capture: a captured step never exceeds the
// largest bucket, so nothing a graph holds is reallocated under it.
void Decoder::ensure_step(int64_t rows) {
    if (rows <= step_.rows) return;
    const hspmn_block_params& bp = model_.params().block;
    const int64_t D = bp.dim;
    const auto r = static_cast<std::size_t>(rows);
    const Layout l = layout(rows);
    const std::size_t out_bytes = (r + 1) * 4;
    void* in_host = be_.staging_alloc(l.bytes);
    void* out_host = nullptr;
    try {
        out_host = be_.staging_alloc(out_bytes);
    } catch (...) {
        be_.staging_free(in_host, l.bytes);
        throw;
    }
    if (step_.in_host) be_.staging_free(step_.in_host, step_.in_bytes);
    if (step_.out_host) be_.staging_free(step_.out_host, step_.out_bytes);
    step_.in_host = in_host;
    step_.out_host = out_host;
    step_.in_bytes = l.bytes;
    step_.out_bytes = out_bytes;
    step_.in_dev.ensure(l.bytes);
    step_.out_dev.ensure(out_bytes);
    step_.act_a.ensure(r * static_cast<std::size_t>(D) * 2);
    step_.act_b.ensure(r * static_cast<std::size_t>(D) * 2);
    step_.hidden.ensure(r * static_cast<std::size_t>(D) * 2);
    step_.rstd.ensure(r * 4);
    step_.logits.ensure(r * static_cast<std::size_t>(V_) * 4);
    step_.rows = rows;
}

void Decoder::fill_staging(int64_t n, int64_t nb, const int32_t* slots, const int32_t* tokens,
                           const hspmn_sampling_params* params) {
    const Layout l = layout(nb);
    auto* base = static_cast<char*>(step_.in_host);
    auto* slot = reinterpret_cast<int32_t*>(base);
    auto* pos = reinterpret_cast<int32_t*>(base + l.pos);
    auto* tok = reinterpret_cast<int32_t*>(base + l.token);
    auto* par = reinterpret_cast<hspmn_sampling_params*>(base + l.params);
    for (int64_t j = 0; j < nb; ++j) {
        const bool real = j < n;
        slot[j] = real ? slots[j] : -1;
        pos[j] = real ? static_cast<int32_t>(len_[static_cast<std::size_t>(slots[j])]) : 0;
        tok[j] = real ? tokens[j] : 0;
        par[j] = real ? params[j] : hspmn_sampling_default_params();
    }
}

void Decoder::step_body_thunk(void* self) {
    auto* d = static_cast<Decoder*>(self);
    d->step_body(d->body_rows_);
}

void Decoder::step_body(int64_t nb) {
    const hspmn_block_params& bp = model_.params().block;
    const Layout l = layout(nb);
    auto* dev = step_.in_dev.as<char>();
    const auto* slot = reinterpret_cast<const int32_t*>(dev);
    const auto* pos = reinterpret_cast<const int32_t*>(dev + l.pos);
    const auto* tok = reinterpret_cast<const int32_t*>(dev + l.token);
    const auto* par = reinterpret_cast<const hspmn_sampling_params*>(dev + l.params);
    be_.copy_from_staging(dev, step_.in_host, l.bytes);
    be_.embedding_forward(model_.embedding_value(), tok, nb, D_, step_.act_a.as<uint16_t>());
    uint16_t* in = step_.act_a.as<uint16_t>();
    uint16_t* out = step_.act_b.as<uint16_t>();
    // Blocks without a step path (the CPU; more rows than the step kernels take) run decode, whose
    // metadata is host memory: the staging is host memory and holds it (no padding rows then).
    Buffer<int64_t> row_start, pos0;
    const auto* h_slot = static_cast<const int32_t*>(step_.in_host);
    const auto* h_pos = reinterpret_cast<const int32_t*>(static_cast<const char*>(step_.in_host) + l.pos);
    for (int64_t layer = 0; layer < L_; ++layer) {
        BlockImpl* b = model_.block(layer);
        if (b->has_decode_step(nb)) {
            DecodeStepCall c = layer_call<DecodeStepCall>(layer, in, out);
            c.n = nb;
            c.slot = slot;
            c.pos = pos;
            b->decode_step(c);
        } else {
            if (row_start.size() == 0) {
                row_start = Buffer<int64_t>(static_cast<std::size_t>(nb + 1));
                pos0 = Buffer<int64_t>(static_cast<std::size_t>(nb));
                for (int64_t j = 0; j <= nb; ++j) row_start[j] = j;
                for (int64_t j = 0; j < nb; ++j) pos0[j] = h_pos[j];
            }
            b->decode(decode_call(layer, in, out, nb, nb, row_start.data(), h_slot, pos0.data(), nullptr));
        }
        std::swap(in, out);
    }
    be_.final_norm_forward(in, model_.norm_value(), bp.norm_eps, nb, D_, step_.hidden.as<uint16_t>(),
                           step_.rstd.as<float>());
    be_.lm_logits(step_.hidden.as<uint16_t>(), D_, nb, model_.embedding_value(), V_, D_, step_.logits.as<float>());
    int32_t* next = step_.out_dev.as<int32_t>();
    be_.sample_tokens(step_.logits.as<float>(), nb, V_, par, next, next + nb);
    be_.copy_to_staging(step_.out_host, next, static_cast<std::size_t>(nb + 1) * 4);
}

GraphImpl* Decoder::graph_for(int64_t n, int64_t* nb) {
    for (std::size_t i = 0; i < buckets_.size(); ++i)
        if (buckets_[i] >= n) {
            *nb = buckets_[i];
            return graphs_[i];
        }
    return nullptr;
}

void Decoder::capture(const int32_t* sizes, int32_t count) {
    std::vector<int64_t, TrackedAllocator<int64_t>> want(sizes, sizes + count);
    std::sort(want.begin(), want.end());
    want.erase(std::unique(want.begin(), want.end()), want.end());
    for (int64_t nb : want) {
        if (nb < 1 || nb > max_seqs_)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "batch size %lld must be in [1, max_seqs = %d]", static_cast<long long>(nb),
                 max_seqs_);
        for (int64_t layer = 0; layer < L_; ++layer)
            if (!model_.block(layer)->has_decode_step(nb))
                fail(HSPMN_ERR_INVALID_ARGUMENT, "a decode step of %lld rows cannot be captured: graphs need the CUDA "
                     "backend and batch sizes up to 32 (and a model whose widths are multiples of 32)",
                     static_cast<long long>(nb));
    }
    drop_graphs();
    buckets_ = want;
    try {
        capture_all();
    } catch (...) {
        drop_graphs();
        buckets_.clear();
        throw;
    }
}

// Each bucket: one eager step of padding rows (sizes every scratch buffer, loads the kernels and
// makes the GEMM plans, changes no slot), then the same step recorded.
void Decoder::capture_all() {
    drop_graphs();
    ensure_step(buckets_.back());
    for (int64_t nb : buckets_) {
        fill_staging(0, nb, nullptr, nullptr, nullptr);
        body_rows_ = nb;
        step_body(nb);
        be_.synchronize();
    }
    for (int64_t nb : buckets_) {
        body_rows_ = nb;
        graphs_.push_back(be_.capture(&Decoder::step_body_thunk, this));
    }
    generations_ = step_generations();
}

// A sum that changes when any block's step buffers move (each generation only grows).
uint64_t Decoder::step_generations() const {
    uint64_t g = 0;
    for (int64_t layer = 0; layer < L_; ++layer) g += model_.block(layer)->step_generation();
    return g;
}

void Decoder::step(int32_t n, const int32_t* slots, const int32_t* tokens, const hspmn_sampling_params* params,
                   int32_t* next, hspmn_tensor* logits) {
    int64_t nb = n;
    GraphImpl* g = graph_for(n, &nb);
    if (!g && !buckets_.empty())
        fail(HSPMN_ERR_INVALID_ARGUMENT, "a step of %d slots: the largest captured batch size is %lld (capture it too, "
             "or step in parts)", n, static_cast<long long>(buckets_.back()));
    ensure_step(nb);
    fill_staging(n, nb, slots, tokens, params);
    if (g && generations_ != step_generations()) {
        // Another decoder of this model grew the blocks' step buffers: record the buckets again.
        capture_all();
        g = graph_for(n, &nb);
        fill_staging(n, nb, slots, tokens, params);
    }
    if (g) {
        for (int64_t layer = 0; layer < L_; ++layer) model_.block(layer)->prepare_step();
        try {
            g->launch();
        } catch (const Error& e) {
            if (e.status != HSPMN_ERR_STATE) throw;
            // The attention scratch moved (a larger prefill): record the buckets again, once.
            capture_all();
            fill_staging(n, nb, slots, tokens, params);
            graph_for(n, &nb)->launch();
        }
    } else {
        step_body(nb);
    }
    be_.synchronize();
    const auto* out = static_cast<const int32_t*>(step_.out_host);
    std::memcpy(next, out, static_cast<std::size_t>(n) * 4);
    const int32_t status = out[nb];
    if (logits) {
        hspmn_tensor lv;
        model_.view(lv, step_.logits.as<void>(), HSPMN_DTYPE_F32, {n, V_});
        be_.copy(logits, &lv);
    }
    for (int64_t j = 0; j < n; ++j) len_[static_cast<std::size_t>(slots[j])] += 1;
    if (status != 0) {
        const int64_t row = status - 1;
        if (row < n) {
            const int32_t bad = slots[row];
            reset(bad);
            fail(HSPMN_ERR_NON_FINITE, "the logits of slot %d are not finite (%s); that slot was reset, the other "
                 "slots advanced and their next tokens are written", bad,
                 out[row] == -1 ? "NaN" : out[row] == -2 ? "+Inf" : "every logit -Inf");
        }
    }
}

}  // namespace hspmn
