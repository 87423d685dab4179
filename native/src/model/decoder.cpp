#include "decoder.h"

#include <utility>

#include "../core/error.h"
#include "../core/objects.h"

namespace hspmn {

Decoder::Decoder(Model& model, int32_t max_seqs, int64_t max_len)
    : model_(model), be_(model.backend()), max_seqs_(max_seqs), max_len_(max_len),
      L_(model.params().num_layers), D_(model.params().block.dim), V_(model.params().vocab_size),
      tokens_(be_), act_a_(be_), act_b_(be_), hidden_(be_), rstd_(be_), routed_(be_), logits_(be_), step_(be_) {
    const hspmn_block_params& bp = model.params().block;
    KV_ = static_cast<int64_t>(bp.dim) / bp.num_heads * bp.num_kv_heads;
    P_ = bp.conv_kernel - 1;
    elem_ = static_cast<std::size_t>(model.block(0)->decode_elem_bytes());
    const auto kv_bytes = static_cast<std::size_t>(max_seqs) * static_cast<std::size_t>(max_len) *
                          static_cast<std::size_t>(KV_) * elem_;
    const auto conv_bytes = static_cast<std::size_t>(max_seqs) * static_cast<std::size_t>(P_ > 0 ? P_ : 1) *
                            static_cast<std::size_t>(D_) * elem_;
    for (int64_t l = 0; l < L_; ++l) {
        k_.emplace_back(be_);
        v_.emplace_back(be_);
        conv_.emplace_back(be_);
        k_.back().ensure(kv_bytes);  // zero-filled: a fresh slot's conv history is the padding's zeros
        v_.back().ensure(kv_bytes);
        conv_.back().ensure(conv_bytes);
    }
    len_.assign(static_cast<std::size_t>(max_seqs), 0);
}

void Decoder::reset(int32_t slot) {
    const auto bytes = static_cast<std::size_t>(P_) * static_cast<std::size_t>(D_) * elem_;
    if (bytes > 0)
        for (int64_t l = 0; l < L_; ++l)
            be_.zero_raw(conv_[static_cast<std::size_t>(l)].as<char>() + static_cast<std::size_t>(slot) * bytes, bytes);
    len_[static_cast<std::size_t>(slot)] = 0;
}

void Decoder::append(const int32_t* slots, int64_t n, const int32_t* tokens, int64_t T, hspmn_tensor* logits,
                     hspmn_tensor* routed) {
    try {
        run(slots, n, tokens, T, logits, routed);
    } catch (const Error& e) {
        for (int64_t j = 0; j < n; ++j) reset(slots[j]);
        fail(e.status, "%s (the slots of this call were reset)", e.message.c_str());
    }
}

void Decoder::run(const int32_t* slots, int64_t n, const int32_t* tokens, int64_t T, hspmn_tensor* logits,
                  hspmn_tensor* routed) {
    const int64_t rows = n * T;
    const auto nd = static_cast<std::size_t>(rows * D_);
    tokens_.ensure(static_cast<std::size_t>(rows) * 4);
    act_a_.ensure(nd * 2);
    act_b_.ensure(nd * 2);
    hidden_.ensure(nd * 2);
    rstd_.ensure(static_cast<std::size_t>(rows) * 4);
    routed_.ensure(static_cast<std::size_t>(L_ * rows) * 4);
    logits_.ensure(static_cast<std::size_t>(n * V_) * 4);

    Buffer<int64_t> row_start(static_cast<std::size_t>(n + 1)), pos0(static_cast<std::size_t>(n));
    for (int64_t j = 0; j <= n; ++j) row_start[j] = j * T;
    for (int64_t j = 0; j < n; ++j) pos0[j] = len_[static_cast<std::size_t>(slots[j])];

    be_.copy_from_host_raw(tokens_.as<void>(), tokens, static_cast<std::size_t>(rows) * 4);
    be_.embedding_forward(model_.embedding_value(), tokens_.as<int32_t>(), rows, D_, act_a_.as<uint16_t>());
    uint16_t* in = act_a_.as<uint16_t>();
    uint16_t* out = act_b_.as<uint16_t>();
    for (int64_t l = 0; l < L_; ++l) {
        int32_t* routed_rows = routed ? routed_.as<int32_t>() + l * rows : nullptr;
        model_.block(l)->decode(decode_call(l, in, out, rows, n, row_start.data(), slots, pos0.data(), routed_rows));
        std::swap(in, out);
    }
    // The norm over every new row (cheap next to the blocks), the head on each slot's last row only, and
    // both only when the caller wants logits (a prefill whose logits are dropped skips them).
    if (logits) {
        be_.final_norm_forward(in, model_.norm_value(), model_.params().block.norm_eps, rows, D_,
                               hidden_.as<uint16_t>(), rstd_.as<float>());
        be_.lm_logits(hidden_.as<uint16_t>() + (T - 1) * D_, T * D_, n, model_.embedding_value(), V_, D_,
                      logits_.as<float>());
        hspmn_tensor lv;
        model_.view(lv, logits_.as<void>(), HSPMN_DTYPE_F32, {n, V_});
        be_.copy(logits, &lv);
    }
    if (routed) {
        Buffer<int32_t> lr(static_cast<std::size_t>(L_ * rows)), out_host(static_cast<std::size_t>(L_ * rows));
        be_.copy_to_host_raw(lr.data(), routed_.as<void>(), static_cast<std::size_t>(L_ * rows) * 4);
        for (int64_t l = 0; l < L_; ++l)
            for (int64_t r = 0; r < rows; ++r) out_host[r * L_ + l] = lr[l * rows + r];
        model_.context()->backend->copy_from_host(routed, out_host.data());
    }
    for (int64_t j = 0; j < n; ++j) len_[static_cast<std::size_t>(slots[j])] += T;
}

}  // namespace hspmn
