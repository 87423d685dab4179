#include "model.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "../core/bf16.h"
#include "../core/error.h"
#include "../core/objects.h"
#include "../core/splitmix.h"

namespace hspmn {

namespace {

// Layer i's block seed: distinct streams per layer, and not the model seed itself, so layer 0 of a
// model does not repeat a lone block created with the same seed.
uint64_t layer_seed(uint64_t seed, int64_t layer) {
    uint64_t s = seed ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(layer + 1));
    return splitmix64(s);
}

constexpr uint16_t kBf16One = 0x3F80;

}  // namespace

void validate_model_params(const hspmn_model_params& p) {
    if (p.vocab_size < 2 || p.vocab_size > 65536)
        fail(HSPMN_ERR_INVALID_ARGUMENT, "vocab_size (%d) must be in [2, 65536]", p.vocab_size);
    if (p.num_layers < 1 || p.num_layers > 1024)
        fail(HSPMN_ERR_INVALID_ARGUMENT, "num_layers (%d) must be in [1, 1024]", p.num_layers);
    try {
        validate_block_params(p.block);
    } catch (const Error& e) {
        fail(e.status, "block.%s", e.message.c_str());
    }
}

void RawBuffer::ensure(std::size_t bytes) {
    if (bytes <= bytes_) return;
    release();
    p_ = be_->raw_alloc(bytes);
    bytes_ = bytes;
}

void RawBuffer::release() noexcept {
    if (p_) be_->raw_free(p_, bytes_);
    p_ = nullptr;
    bytes_ = 0;
}

Model::Model(hspmn_context* ctx, const hspmn_model_params& params, uint64_t seed)
    : ctx_(ctx), be_(*ctx->backend), params_(params), block_cfg_(make_block_config(params.block)),
      V_(params.vocab_size), L_(params.num_layers), D_(params.block.dim), emb_value_(be_), emb_grad_(be_),
      norm_value_(be_), norm_grad_(be_), tokens_(be_), targets_(be_), act_a_(be_), act_b_(be_), act_c_(be_), hidden_(be_),
      rstd_(be_), dh_(be_), stats_(be_), ce_sum_(be_), loss_(be_), d_aux_(be_), logits_(be_), inputs_(be_) {
    try {
        blocks_.reserve(static_cast<std::size_t>(L_));
        for (int64_t i = 0; i < L_; ++i) blocks_.push_back(be_.create_block(block_cfg_, layer_seed(seed, i)));

        const int64_t VD = V_ * D_;
        emb_value_.ensure(static_cast<std::size_t>(VD) * 2);
        emb_grad_.ensure(static_cast<std::size_t>(VD) * 4);
        norm_value_.ensure(static_cast<std::size_t>(D_) * 2);
        norm_grad_.ensure(static_cast<std::size_t>(D_) * 4);
        {
            // U(-1/sqrt(D), 1/sqrt(D)): logits start near 0, so the first loss is close to ln V.
            Buffer<uint16_t> host(static_cast<std::size_t>(VD));
            uint64_t state = seed ^ 0x6A09E667F3BCC909ull;
            const double bound = 1.0 / std::sqrt(static_cast<double>(D_));
            for (int64_t i = 0; i < VD; ++i) {
                const double u = splitmix_unit(state);
                host[i] = f32_to_bf16(static_cast<float>((2.0 * u - 1.0) * bound));
            }
            be_.copy_from_host_raw(emb_value_.as<void>(), host.data(), static_cast<std::size_t>(VD) * 2);
            Buffer<uint16_t> ones(static_cast<std::size_t>(D_));
            ones.fill(kBf16One);
            be_.copy_from_host_raw(norm_value_.as<void>(), ones.data(), static_cast<std::size_t>(D_) * 2);
        }

        const int64_t emb_shape[2] = {V_, D_};
        add_param("embedding", 2, emb_shape, -1, emb_value_.as<uint16_t>(), emb_grad_.as<float>());
        const auto table = param_table(block_cfg_);
        for (int64_t i = 0; i < L_; ++i)
            for (int j = 0; j < P_COUNT; ++j) {
                ParamStorage st = blocks_[i]->param_storage(j);
                add_param("blocks." + std::to_string(i) + "." + table[j].name, table[j].ndim, table[j].shape,
                          static_cast<int>(i), st.value, st.grad);
            }
        const int64_t norm_shape[2] = {D_, 1};
        add_param("norm", 1, norm_shape, -1, norm_value_.as<uint16_t>(), norm_grad_.as<float>());

        // Master weights start as the bf16 values widened, so master and forward copy agree.
        for (Param& p : params_list_) {
            const auto bytes4 = static_cast<std::size_t>(p.numel) * 4;
            p.master.ensure(bytes4);
            p.m.ensure(bytes4);
            p.v.ensure(bytes4);
            Buffer<uint16_t> bits(static_cast<std::size_t>(p.numel));
            Buffer<float> f(static_cast<std::size_t>(p.numel));
            be_.copy_to_host_raw(bits.data(), p.value, static_cast<std::size_t>(p.numel) * 2);
            for (int64_t k = 0; k < p.numel; ++k) f[k] = bf16_to_f32(bits[k]);
            be_.copy_from_host_raw(p.master.as<void>(), f.data(), bytes4);
        }
        zero_grad();
        stats_.ensure(static_cast<std::size_t>(L_) * 2 * 4);
        ce_sum_.ensure(4);
        loss_.ensure(8);
        d_aux_.ensure(4);
    } catch (...) {
        for (BlockImpl* b : blocks_) delete b;
        blocks_.clear();
        throw;
    }
}

Model::~Model() {
    dp_release();
    for (BlockImpl* b : blocks_) delete b;
}

void Model::add_param(const std::string& name, int32_t ndim, const int64_t* shape, int layer, uint16_t* value,
                      float* grad) {
    Param p{name, ndim, {shape[0], ndim == 2 ? shape[1] : 1}, 0, ndim == 2, layer, value, grad,
            RawBuffer(be_), RawBuffer(be_), RawBuffer(be_)};
    p.numel = p.shape[0] * p.shape[1];
    params_list_.push_back(std::move(p));
}

int Model::find(const char* name) const {
    for (int i = 0; i < param_count(); ++i)
        if (params_list_[i].name == name) return i;
    return -1;
}

std::string Model::known_names() const {
    std::string s = "embedding, blocks.{0.." + std::to_string(L_ - 1) + "}.{";
    for (int j = 0; j < P_COUNT; ++j) {
        if (j) s += ", ";
        s += param_name(j);
    }
    return s + "}, norm";
}

void Model::get_param(int i, float* host) const {
    const Param& p = params_list_[i];
    be_.copy_to_host_raw(host, p.master.as<void>(), static_cast<std::size_t>(p.numel) * 4);
}

void Model::set_param(int i, const float* host) {
    Param& p = params_list_[i];
    Buffer<uint16_t> bits(static_cast<std::size_t>(p.numel));
    for (int64_t k = 0; k < p.numel; ++k) bits[k] = f32_to_bf16(host[k]);
    be_.copy_from_host_raw(p.master.as<void>(), host, static_cast<std::size_t>(p.numel) * 4);
    be_.copy_from_host_raw(p.value, bits.data(), static_cast<std::size_t>(p.numel) * 2);
    if (p.layer >= 0) blocks_[p.layer]->params_written();
}

void Model::get_grad(int i, float* host) const {
    const Param& p = params_list_[i];
    be_.copy_to_host_raw(host, p.grad, static_cast<std::size_t>(p.numel) * 4);
}

void Model::get_moment(int i, int which, float* host) const {
    if (dp_sharded()) return dp_get_moment(i, which, host);  // ZeRO-1: this rank holds a share
    const Param& p = params_list_[i];
    be_.copy_to_host_raw(host, (which == 0 ? p.m : p.v).as<void>(), static_cast<std::size_t>(p.numel) * 4);
}

void Model::set_moment(int i, int which, const float* host) {
    if (dp_sharded()) return dp_set_moment(i, which, host);
    Param& p = params_list_[i];
    be_.copy_from_host_raw((which == 0 ? p.m : p.v).as<void>(), host, static_cast<std::size_t>(p.numel) * 4);
}

void Model::zero_grad() {
    be_.zero_raw(emb_grad_.as<void>(), static_cast<std::size_t>(V_ * D_) * 4);
    be_.zero_raw(norm_grad_.as<void>(), static_cast<std::size_t>(D_) * 4);
    for (BlockImpl* b : blocks_) b->zero_grad();
}

void Model::view(hspmn_tensor& t, void* data, int32_t dtype, std::initializer_list<int64_t> shape) const {
    t.ctx = ctx_;
    t.dtype = dtype;
    t.memory = be_.internal_memory();
    t.ndim = static_cast<int32_t>(shape.size());
    int64_t numel = 1;
    int k = 0;
    for (int64_t e : shape) {
        t.shape[k++] = e;
        numel *= e;
    }
    t.numel = numel;
    t.nbytes = numel * (dtype == HSPMN_DTYPE_BF16 ? 2 : 4);
    t.data = data;
}

void Model::ensure_rows(int64_t N) {
    if (N <= rows_cap_) return;
    // Regrowth drops contents, so no forward's activations survive it.
    has_cache_ = false;
    const auto n = static_cast<std::size_t>(N), nd = static_cast<std::size_t>(N * D_);
    tokens_.ensure(n * 4);
    targets_.ensure(n * 4);
    act_a_.ensure(nd * 2);
    act_b_.ensure(nd * 2);
    act_c_.ensure(nd * 2);
    hidden_.ensure(nd * 2);
    rstd_.ensure(n * 4);
    rows_cap_ = N;
}

void Model::layer_forward(const TrunkCall& t, int64_t i, uint16_t* x, uint16_t* out, float* stats) {
    hspmn_tensor xv;
    view(xv, x, HSPMN_DTYPE_BF16, {t.B, t.S, D_});
    hspmn_tensor ov;
    view(ov, out, HSPMN_DTYPE_BF16, {t.B, t.S, D_});
    hspmn_tensor av;
    if (stats) view(av, stats, HSPMN_DTYPE_F32, {1});
    ForwardCall fc{t.training, t.noise, t.seed, t.step, static_cast<int32_t>(i), t.aux_target, &xv, nullptr, nullptr,
                   nullptr, &ov, stats ? &av : nullptr};
    fc.routed_fraction = stats ? stats + 1 : nullptr;
    fc.dropout = t.dropout;
    fc.row_offset = t.row_offset;
    if (stats && t.training && noise_free_out_) fc.noise_free_fraction = noise_free_out_ + i;
    blocks_[i]->forward(fc);
}

void Model::run_trunk(const TrunkCall& t) {
    const int64_t N = t.B * t.S, ND = N * D_;
    // Recomputation keeps every layer's input (layer i reads slot i, writes slot i + 1); otherwise two
    // buffers take turns.
    const bool keep_inputs = t.recompute;  // set only for training forwards
    uint16_t* in = keep_inputs ? inputs_.as<uint16_t>() : act_a_.as<uint16_t>();
    uint16_t* out = keep_inputs ? in + ND : act_b_.as<uint16_t>();
    be_.embedding_forward(emb_value_.as<uint16_t>(), tokens_.as<int32_t>(), N, D_, in);
    float* stats = stats_.as<float>();
    for (int64_t i = 0; i < L_; ++i) {
        layer_forward(t, i, in, out, stats + 2 * i);
        if (keep_inputs) {
            // Its activations are overwritten by the next layer's (or freed): backward re-runs this forward.
            blocks_[i]->drop_cache();
            in = out;
            out += ND;
        } else {
            std::swap(in, out);
        }
    }
    trunk_out_ = in;
    be_.final_norm_forward(in, norm_value_.as<uint16_t>(), params_.block.norm_eps, N, D_, hidden_.as<uint16_t>(),
                           rstd_.as<float>());
}

void Model::forward(const ModelForward& c) {
    has_cache_ = false;
    const int64_t N = c.B * c.S;
    ensure_rows(N);
    be_.copy_from_host_raw(tokens_.as<void>(), c.tokens, static_cast<std::size_t>(N) * 4);
    if (c.targets) be_.copy_from_host_raw(targets_.as<void>(), c.targets, static_cast<std::size_t>(N) * 4);
    noise_free_out_ = nullptr;
    if (c.training) {
        if (noise_free_restart_) {
            noise_free_forwards_ = 0;
            noise_free_restart_ = false;
        }
        const auto slot = static_cast<std::size_t>(noise_free_forwards_);
        if (slot == noise_free_.size()) {
            noise_free_.emplace_back(be_);
            noise_free_.back().ensure(static_cast<std::size_t>(L_) * 4);
        }
        noise_free_out_ = noise_free_[slot].as<float>();
    }
    const TrunkCall t{c.training, c.noise, c.seed, c.step, c.row_offset, c.aux_target, c.dropout,
                      c.training && c.recompute, c.B, c.S};
    if (c.training) {
        if (t.recompute)
            inputs_.ensure(static_cast<std::size_t>((L_ + 1) * N * D_) * 2);
        else
            inputs_.release();
        // Shared activations only while recomputing: otherwise every layer keeps its own for backward.
        if (t.recompute != blocks_shared_) {
            for (BlockImpl* b : blocks_) b->share_activations(t.recompute);
            blocks_shared_ = t.recompute;
        }
    }
    run_trunk(t);
    noise_free_out_ = nullptr;
    if (c.targets) {
        // Loss only: backward recomputes the head with gradients, which keeps no [N, V] logits and
        // no [V, D] head gradient alive between the two calls.
        be_.cross_entropy_fused(hidden_.as<uint16_t>(), emb_value_.as<uint16_t>(), targets_.as<int32_t>(), N, V_,
                                D_, 0.0f, ce_sum_.as<float>(), nullptr, nullptr);
        be_.loss_finish(ce_sum_.as<float>(), stats_.as<float>(), L_, N, loss_.as<float>());
        if (c.loss) {
            hspmn_tensor lv;
        view(lv, loss_.as<void>(), HSPMN_DTYPE_F32, {2});
            be_.copy(c.loss, &lv);
        }
    }
    if (c.stats) {
        hspmn_tensor sv;
        view(sv, stats_.as<void>(), HSPMN_DTYPE_F32, {L_, 2});
        be_.copy(c.stats, &sv);
    }
    if (c.training) {
        last_ = t;
        has_cache_ = true;
        ++noise_free_forwards_;
    }
}

void Model::backward(float loss_scale, bool accumulate) {
    if (!has_cache_) fail(HSPMN_ERR_STATE, "no training forward to differentiate (call hspmn_model_forward with training = 1 first)");
    const int64_t B = last_.B, S = last_.S, N = B * S;
    dh_.ensure(static_cast<std::size_t>(N * D_) * 4);
    if (dp_) loss_scale = dp_backward_begin(loss_scale, accumulate);  // data parallelism: the rank's share of the mean
    if (!accumulate) {
        be_.zero_raw(emb_grad_.as<void>(), static_cast<std::size_t>(V_ * D_) * 4);
        be_.zero_raw(norm_grad_.as<void>(), static_cast<std::size_t>(D_) * 4);
    }
    // The head: d loss_scale * mean CE; ce_sum_ is rewritten with the same value.
    be_.cross_entropy_fused(hidden_.as<uint16_t>(), emb_value_.as<uint16_t>(), targets_.as<int32_t>(), N, V_, D_,
                            loss_scale / static_cast<float>(N), ce_sum_.as<float>(), dh_.as<float>(),
                            emb_grad_.as<float>());
    // The gradients take turns in act_c_ and the one of act_a_/act_b_ that is not trunk_out_ (it must
    // survive for a repeated backward: the cache stays until the next forward). Under recomputation
    // trunk_out_ is in inputs_: act_b_ and act_c_ take the gradients and act_a_ the re-run forwards'
    // outputs (discarded: the forward already passed them on).
    uint16_t* d_out = trunk_out_ == act_b_.as<uint16_t>() ? act_a_.as<uint16_t>() : act_b_.as<uint16_t>();
    uint16_t* d_in = act_c_.as<uint16_t>();
    uint16_t* rerun_out = act_a_.as<uint16_t>();
    const int64_t ND = N * D_;
    be_.final_norm_backward(trunk_out_, norm_value_.as<uint16_t>(), rstd_.as<float>(), dh_.as<float>(), N, D_,
                            d_out, norm_grad_.as<float>());
    if (dp_) dp_group_done(0);  // data parallelism: each group's gradients are final here
    be_.fill_f32(d_aux_.as<float>(), 1, loss_scale);
    hspmn_tensor dav;
        view(dav, d_aux_.as<void>(), HSPMN_DTYPE_F32, {1});
    for (int64_t i = L_ - 1; i >= 0; --i) {
        hspmn_tensor dov;
        view(dov, d_out, HSPMN_DTYPE_BF16, {B, S, D_});
        hspmn_tensor dxv;
        view(dxv, d_in, HSPMN_DTYPE_BF16, {B, S, D_});
        BackwardCall bc{accumulate ? 1 : 0, &dov, &dav, &dxv};
        // The same call as the forward's (noise, dropout masks and routing redrawn from the same keys,
        // the same weights: no optimizer step in between), so the activations are the forward's bit for
        // bit; no stats (the forward reported them).
        if (last_.recompute) layer_forward(last_, i, inputs_.as<uint16_t>() + i * ND, rerun_out, nullptr);
        blocks_[i]->backward(bc);
        if (last_.recompute) blocks_[i]->drop_cache();
        if (dp_) dp_group_done(static_cast<int>(L_ - i));
        std::swap(d_out, d_in);
    }
    be_.embedding_backward(d_out, tokens_.as<int32_t>(), N, D_, emb_grad_.as<float>());
    if (dp_) {
        dp_group_done(static_cast<int>(L_ + 1));
        dp_backward_end();
    }
}

void Model::logits(const int32_t* tokens, int64_t B, int64_t S, hspmn_tensor* out) {
    has_cache_ = false;
    const int64_t N = B * S;
    ensure_rows(N);
    be_.copy_from_host_raw(tokens_.as<void>(), tokens, static_cast<std::size_t>(N) * 4);
    TrunkCall t;
    t.aux_target = params_.block.sparsity_k;
    t.B = B;
    t.S = S;
    run_trunk(t);
    logits_.ensure(static_cast<std::size_t>(B * V_) * 4);
    be_.lm_logits(hidden_.as<uint16_t>() + (S - 1) * D_, S * D_, B, emb_value_.as<uint16_t>(), V_, D_,
                  logits_.as<float>());
    hspmn_tensor lv;
        view(lv, logits_.as<void>(), HSPMN_DTYPE_F32, {B, V_});
    be_.copy(out, &lv);
}

}  // namespace hspmn
