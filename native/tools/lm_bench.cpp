// hspmn_lm_bench: times language-model training steps (forward + backward + AdamW, the step the Java
// trainer drives) through the public C ABI, on random tokens, and reports tokens/s, model FLOP/s,
// MFU against a given peak, and the library's peak memory. The default shape is the paper's 1B
// model (24 layers, D=2048, H=16, Hkv=4, mlp_ratio 4, V=256).
//
//   hspmn_lm_bench [--backend cpu|cuda|auto] [--layers N] [--dim D] [--heads H] [--kv-heads K]
//                  [--mlp-ratio R] [--vocab V] [--batch B] [--seq S] [--grad-accum A] [--steps N]
//                  [--warmup N] [--rho R] [--recompute 0|1] [--peak-tflops T] [--threads N] [--json PATH]
//
// FLOPs counted per token and layer (forward; a training step counts 3x forward, the convention of
// 6 x parameters x tokens): reflex gate/up/down 6 D F, conv 2 D K, k and v projections 4 D KV for
// every token, q and o 4 D^2 for routed tokens only (fraction measured per step), causal attention
// 2 D S_avg for routed tokens (S_avg = (S+1)/2 keys), router 2 D; plus the tied head 2 D V.
// The backward's recomputation of the head is not counted (it is overhead, not model FLOPs).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "hspmn.h"
#include "tool_common.h"

namespace {

using namespace hspmn_tool;

const char* const kTool = "hspmn_lm_bench";

struct Options {
    int32_t backend = HSPMN_BACKEND_AUTO;
    ModelShape shape;
    int batch = 8, seq = 2048, grad_accum = 1, steps = 10, warmup = 2, threads = 0, recompute = 0;
    float rho = 0.2f;
    double peak_tflops = 989.0;  // H200 SXM dense bf16 (vendor datasheet, ../.library device notes)
    std::string json;
};

bool check(hspmn_status s, const char* what) { return hspmn_tool::check(kTool, s, what); }

const char* usage =
    "usage: hspmn_lm_bench [--backend cpu|cuda|auto] [--layers N] [--dim D] [--heads H] [--kv-heads K]\n"
    "                      [--mlp-ratio R] [--vocab V] [--batch B] [--seq S] [--grad-accum A] [--steps N]\n"
    "                      [--warmup N] [--rho R] [--recompute 0|1] [--peak-tflops T] [--threads N] [--json PATH]\n"
    "--recompute 1: activation recomputation (hspmn_model_forward_params.recompute); MFU still counts the\n"
    "model's FLOPs only, not the re-run forwards\n";

// Returns an error message, "help", or "" when the options parsed.
std::string parse(int argc, char** argv, Options* o) {
    const std::string err = parse_options(argc, argv, [o](const std::string& a, const std::string& v, bool* ok) {
        if (o->shape.parse(a, v, ok) ||
            take_count(a, v,
                       {{"--batch", &o->batch}, {"--seq", &o->seq}, {"--grad-accum", &o->grad_accum},
                        {"--steps", &o->steps}, {"--warmup", &o->warmup}, {"--threads", &o->threads}},
                       ok))
            return true;
        if (a == "--backend") *ok = parse_backend(v, &o->backend);
        else if (a == "--rho") *ok = parse_number(v, &o->rho);
        else if (a == "--recompute") *ok = (v == "0" || v == "1") && (o->recompute = v == "1", true);
        else if (a == "--peak-tflops") *ok = parse_number(v, &o->peak_tflops) && o->peak_tflops > 0;
        else if (a == "--json") o->json = v;
        else return false;
        return true;
    });
    if (!err.empty()) return err;
    if (o->batch < 1 || o->seq < 2 || o->steps < 1 || o->grad_accum < 1)
        return "--batch, --steps, --grad-accum must be >= 1 and --seq >= 2";
    return "";
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    if (const int rc = options_exit(parse(argc, argv, &o), kTool, usage); rc >= 0) return rc;
    hspmn_context_params cp = context_params(o.backend, o.threads);
    cp.nan_policy = HSPMN_NAN_PROPAGATE;  // the trainer checks the loss; no scans in the timed loop
    int32_t backend = 0;
    hspmn_context* ctx = open_context(kTool, cp, &backend);
    if (!ctx) return 1;

    const hspmn_model_params mp = o.shape.params(o.rho);
    hspmn_model* model = nullptr;
    if (!check(hspmn_model_create(ctx, &mp, 1234, &model), "hspmn_model_create")) return 1;
    int32_t nparams = 0;
    hspmn_model_param_count(model, &nparams);
    int64_t total_params = 0;
    for (int i = 0; i < nparams; ++i) {
        const char* name = nullptr;
        hspmn_tensor_desc d;
        hspmn_model_param_name(model, i, &name);
        hspmn_model_param_describe(model, name, &d);
        total_params += d.numel;
    }

    const int64_t B = o.batch, S = o.seq, L = o.shape.layers;
    const int64_t shape[2] = {B, S};
    const int64_t stats_shape[2] = {L, 2};
    const int64_t two = 2;
    hspmn_tensor *tok = nullptr, *tgt = nullptr, *loss = nullptr, *stats = nullptr;
    if (!check(hspmn_tensor_create(ctx, HSPMN_DTYPE_I32, HSPMN_MEMORY_PINNED, 2, shape, &tok), "tensor") ||
        !check(hspmn_tensor_create(ctx, HSPMN_DTYPE_I32, HSPMN_MEMORY_PINNED, 2, shape, &tgt), "tensor") ||
        !check(hspmn_tensor_create(ctx, HSPMN_DTYPE_F32, HSPMN_MEMORY_PINNED, 1, &two, &loss), "tensor") ||
        !check(hspmn_tensor_create(ctx, HSPMN_DTYPE_F32, HSPMN_MEMORY_PINNED, 2, stats_shape, &stats), "tensor"))
        return 1;
    std::mt19937 rng(7);
    std::vector<int32_t> ids(static_cast<size_t>(B * S + 1));
    std::vector<float> lossv(2), statv(static_cast<size_t>(2 * L));

    const double D = o.shape.dim, F = o.shape.ffn(), KV = o.shape.kv_dim();
    const double per_token_dense = 6 * D * F + 2 * D * 3 + 4 * D * KV + 2 * D;  // conv_kernel 3
    const double per_routed = 4 * D * D + 2 * D * (S + 1) / 2.0;

    double timed_s = 0, timed_flops = 0, routed_sum = 0;
    int timed = 0;
    hspmn_alloc_stats_reset_peak();
    for (int step = 0; step < o.warmup + o.steps; ++step) {
        auto t0 = std::chrono::steady_clock::now();
        double routed = 0;
        for (int a = 0; a < o.grad_accum; ++a) {
            for (auto& x : ids) x = static_cast<int32_t>(rng() % static_cast<unsigned>(o.shape.vocab));
            hspmn_tensor_copy_in(tok, ids.data(), B * S * 4);
            hspmn_tensor_copy_in(tgt, ids.data() + 1, B * S * 4);
            hspmn_model_forward_params fp = hspmn_model_forward_default_params();
            fp.training = 1;
            fp.recompute = o.recompute;
            fp.seed = 99;
            fp.step = static_cast<int64_t>(step) * o.grad_accum + a;
            if (!check(hspmn_model_forward(model, &fp, tok, tgt, loss, stats), "hspmn_model_forward")) return 1;
            hspmn_model_backward_params bp = hspmn_model_backward_default_params();
            bp.loss_scale = 1.0f / static_cast<float>(o.grad_accum);
            bp.accumulate = a > 0;
            if (!check(hspmn_model_backward(model, &bp), "hspmn_model_backward")) return 1;
            hspmn_tensor_copy_out(stats, statv.data(), 2 * L * 4);
            for (int64_t l = 0; l < L; ++l) routed += statv[2 * l + 1] / static_cast<double>(L * o.grad_accum);
        }
        hspmn_adamw_params ap = hspmn_adamw_default_params();
        ap.step = step + 1;
        hspmn_adamw_result ar;
        if (!check(hspmn_model_adamw_step(model, &ap, &ar), "hspmn_model_adamw_step")) return 1;
        hspmn_context_synchronize(ctx);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        hspmn_tensor_copy_out(loss, lossv.data(), 8);
        const double tokens = static_cast<double>(B * S * o.grad_accum);
        const double flops = 3.0 * tokens * (L * (per_token_dense + routed * per_routed) + 2 * D * o.shape.vocab);
        std::printf("step %3d  %s  loss %.4f  grad_norm %.3f  routed %.3f  %.1f ms  %.0f tok/s\n", step,
                    step < o.warmup ? "warm " : "timed", lossv[0], ar.grad_norm, routed, s * 1e3, tokens / s);
        if (step >= o.warmup) {
            timed_s += s;
            timed_flops += flops;
            routed_sum += routed;
            ++timed;
        }
    }
    hspmn_alloc_stats st;
    hspmn_alloc_stats_get(&st);
    const double tokens = static_cast<double>(B * S * o.grad_accum) * timed;
    const double tflops = timed_flops / timed_s / 1e12;
    std::printf("\nlm train  backend %s  params %.1f M  L=%d %s  B=%lld S=%lld accum %d%s\n", backend_name(backend),
                total_params / 1e6, o.shape.layers, o.shape.describe().c_str(), static_cast<long long>(B),
                static_cast<long long>(S), o.grad_accum, o.recompute ? "  recompute" : "");
    std::printf("  %.0f tok/s  %.1f ms/step  %.1f model TFLOP/s  MFU %.1f %% of %.0f  peak %.2f GB  routed %.3f\n",
                tokens / timed_s, timed_s / timed * 1e3, tflops, 100.0 * tflops / o.peak_tflops, o.peak_tflops,
                st.peak_bytes / 1e9, routed_sum / timed);
    if (!write_json(kTool, o.json, "lm_train", backend, o.shape,
                    "\"params\": %lld, \"batch\": %lld, \"seq\": %lld, \"grad_accum\": %d, \"recompute\": %d, \"steps\": %d, "
                    "\"tokens_per_s\": %.1f, \"ms_per_step\": %.3f, \"model_tflops\": %.2f, \"mfu\": %.4f, "
                    "\"peak_tflops\": %.1f, \"peak_bytes\": %lld, \"routed_fraction\": %.4f, \"final_loss\": %.5f}\n",
                    static_cast<long long>(total_params), static_cast<long long>(B), static_cast<long long>(S),
                    o.grad_accum, o.recompute, timed, tokens / timed_s, timed_s / timed * 1e3, tflops, tflops / o.peak_tflops,
                    o.peak_tflops, static_cast<long long>(st.peak_bytes), routed_sum / timed, lossv[0]))
        return 1;
    for (hspmn_tensor* t : {tok, tgt, loss, stats}) hspmn_tensor_destroy(t);
    hspmn_model_destroy(model);
    hspmn_context_destroy(ctx);
    return 0;
}
