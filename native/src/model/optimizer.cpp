// AdamW over every parameter of the model (native/reference/README.md, hspmn_lm.train_step):
// global norm, clipping folded into the update as a gradient scale, then one fused update per tensor.
// Then, optionally, the router bias controller's step (hspmn_lm.router_bias_step).
#include <cmath>

#include "../core/alloc.h"
#include "../core/bf16.h"
#include "../core/error.h"
#include "model.h"

namespace hspmn {

namespace {
constexpr double kClipEps = 1e-6;  // torch.nn.utils.clip_grad_norm_'s
}

hspmn_adamw_result Model::adamw_step(const hspmn_adamw_params& a) {
    Buffer<GradSpan> spans(params_list_.size());
    for (std::size_t i = 0; i < params_list_.size(); ++i) spans[i] = {params_list_[i].grad, params_list_[i].numel};
    const double norm = std::sqrt(be_.sum_squares(spans.data(), static_cast<int64_t>(spans.size())));
    hspmn_adamw_result r{static_cast<float>(norm), 0};
    noise_free_restart_ = true;  // the next step's forwards measure afresh, applied or skipped
    if (!std::isfinite(norm)) return r;  // skipped: weights, moments and the bf16 copies untouched

    float grad_scale = 1.0f;
    if (a.max_grad_norm > 0.0f) {
        const double c = static_cast<double>(a.max_grad_norm) / (norm + kClipEps);
        if (c < 1.0) grad_scale = static_cast<float>(c);
    }
    const double t = static_cast<double>(a.step);
    AdamwScalars s{};
    s.lr = a.lr;
    s.beta1 = a.beta1;
    s.beta2 = a.beta2;
    s.eps = a.eps;
    s.bias1 = static_cast<float>(1.0 - std::pow(static_cast<double>(a.beta1), t));
    s.bias2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(a.beta2), t)));
    s.grad_scale = grad_scale;
    if (dp_sharded()) {
        dp_adamw_shard(s, a.weight_decay);  // ZeRO-1 (data_parallel.cpp)
    } else {
        for (Param& p : params_list_) {
            s.weight_decay = p.decay ? a.weight_decay : 0.0f;
            be_.adamw_update(p.master.as<float>(), p.value, p.grad, p.m.as<float>(), p.v.as<float>(), p.numel, s);
        }
    }
    for (BlockImpl* b : blocks_) b->params_written();
    r.applied = 1;
    return r;
}

// The sign rule of auxiliary-loss-free load balancing (Wang et al. 2024), with f the noise-free
// fraction: deterministic, state-free beyond router.b, so a resumed run repeats it bit for bit.
void Model::router_bias_step(float target, float rate, float* fractions) {
    if (noise_free_forwards_ == 0)
        fail(HSPMN_ERR_STATE, "no training forward to measure since the last router bias step (call "
                              "hspmn_model_forward with training = 1 first)");
    // The forwards' fractions summed in their order, in double: what the reference's train_step does.
    const auto K = static_cast<std::size_t>(noise_free_forwards_);
    const auto Lz = static_cast<std::size_t>(L_);
    Buffer<float> per(K * Lz);
    for (std::size_t k = 0; k < K; ++k) be_.copy_to_host_raw(per.data() + k * Lz, noise_free_[k].as<void>(), Lz * 4);
    // Data parallelism: every rank's f_i averaged over the ranks, so the biases stay identical.
    Buffer<float> mean_f(dp_ ? Lz : 0);
    if (dp_) {
        for (std::size_t i = 0; i < Lz; ++i) {
            double sum = 0.0;
            for (std::size_t k = 0; k < K; ++k) sum += per[k * Lz + i];
            mean_f[i] = static_cast<float>(sum / static_cast<double>(K));
        }
        dp_mean_fractions(mean_f.data());
    }
    for (int64_t i = 0; i < L_; ++i) {
        double sum = 0.0;
        for (std::size_t k = 0; k < K; ++k) sum += per[k * Lz + static_cast<std::size_t>(i)];
        const double f = dp_ ? static_cast<double>(mean_f[i]) : sum / static_cast<double>(K);
        if (fractions) fractions[i] = static_cast<float>(f);
        const double want = static_cast<double>(target);
        if (f == want || rate == 0.0f) continue;
        Param& p = params_list_[static_cast<std::size_t>(1 + i * P_COUNT + P_ROUTER_B)];
        float b = 0.0f;
        be_.copy_to_host_raw(&b, p.master.as<void>(), 4);
        b = f < want ? b + rate : b - rate;
        const uint16_t bits = f32_to_bf16(b);
        be_.copy_from_host_raw(p.master.as<void>(), &b, 4);
        be_.copy_from_host_raw(p.value, &bits, 2);
        blocks_[static_cast<std::size_t>(i)]->params_written();
    }
    noise_free_forwards_ = 0;
    noise_free_restart_ = true;
}

}  // namespace hspmn
