// hspmn_lm_bench: times language-model training steps (forward + backward + AdamW, the step the Java
// trainer drives) through the public C ABI, on random tokens, and reports tokens/s, model FLOP/s,
// MFU against a given peak, and the library's peak memory. The default shape is the paper's 1B
// model (24 layers, D=2048, H=16, Hkv=4, mlp_ratio 4, V=256).
//
//   hspmn_lm_bench [--backend cpu|cuda|auto] [--layers N] [--dim D] [--heads H] [--kv-heads K]
//                  [--mlp-ratio R] [--vocab V] [--batch B] [--seq S] [--grad-accum A] [--steps N]
//                  [--warmup N] [--rho R] [--peak-tflops T] [--threads N] [--json PATH]
//
// FLOPs counted per token and layer (forward; a training step counts 3x forward, the convention of
// 6 x parameters x tokens): reflex gate/up/down 6 D F, conv 2 D K, k and v projections 4 D KV for
// every token, q and o 4 D^2 for routed tokens only (fraction measured per step), causal attention
// 2 D S_avg for routed tokens (S_avg = (S+1)/2 keys), router 2 D; plus the tied head 2 D V.
// The backward's recomputation of the head is not counted (it is overhead, not model FLOPs).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "hspmn.h"

namespace {

struct Options {
    int backend = HSPMN_BACKEND_AUTO;
    int layers = 24, dim = 2048, heads = 16, kv_heads = 4, mlp_ratio = 4, vocab = 256;
    int batch = 8, seq = 2048, grad_accum = 1, steps = 10, warmup = 2, threads = 0;
    float rho = 0.2f;
    double peak_tflops = 989.0;  // H200 SXM dense bf16 (vendor datasheet, ../.library device notes)
    std::string json;
};

bool check(hspmn_status s, const char* what) {
    if (s == HSPMN_OK) return true;
    std::fprintf(stderr, "hspmn_lm_bench: %s failed: %s: %s\n", what, hspmn_status_name(s), hspmn_last_error());
    return false;
}

const char* usage =
    "usage: hspmn_lm_bench [--backend cpu|cuda|auto] [--layers N] [--dim D] [--heads H] [--kv-heads K]\n"
    "                      [--mlp-ratio R] [--vocab V] [--batch B] [--seq S] [--grad-accum A] [--steps N]\n"
    "                      [--warmup N] [--rho R] [--peak-tflops T] [--threads N] [--json PATH]\n";

// Returns an error message, or "" when the options parsed.
std::string parse(int argc, char** argv, Options* o) {
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--help" || a == "-h") return "help";
        if (a.rfind("--", 0) != 0 || i + 1 >= argc) return "expected --option value, got '" + a + "'";
        std::string v = argv[++i];
        char* end = nullptr;
        auto as_int = [&](int* dst) {
            long x = std::strtol(v.c_str(), &end, 10);
            if (*end || x < 0 || x > 1 << 30) return false;
            *dst = static_cast<int>(x);
            return true;
        };
        bool ok = true;
        if (a == "--backend") {
            if (v == "cpu") o->backend = HSPMN_BACKEND_CPU;
            else if (v == "cuda") o->backend = HSPMN_BACKEND_CUDA;
            else if (v == "auto") o->backend = HSPMN_BACKEND_AUTO;
            else ok = false;
        } else if (a == "--layers") ok = as_int(&o->layers);
        else if (a == "--dim") ok = as_int(&o->dim);
        else if (a == "--heads") ok = as_int(&o->heads);
        else if (a == "--kv-heads") ok = as_int(&o->kv_heads);
        else if (a == "--mlp-ratio") ok = as_int(&o->mlp_ratio);
        else if (a == "--vocab") ok = as_int(&o->vocab);
        else if (a == "--batch") ok = as_int(&o->batch);
        else if (a == "--seq") ok = as_int(&o->seq);
        else if (a == "--grad-accum") ok = as_int(&o->grad_accum);
        else if (a == "--steps") ok = as_int(&o->steps);
        else if (a == "--warmup") ok = as_int(&o->warmup);
        else if (a == "--threads") ok = as_int(&o->threads);
        else if (a == "--rho") { o->rho = std::strtof(v.c_str(), &end); ok = !*end; }
        else if (a == "--peak-tflops") { o->peak_tflops = std::strtod(v.c_str(), &end); ok = !*end && o->peak_tflops > 0; }
        else if (a == "--json") o->json = v;
        else return "unknown option " + a;
        if (!ok) return "bad value '" + v + "' for " + a;
    }
    if (o->batch < 1 || o->seq < 2 || o->steps < 1 || o->grad_accum < 1)
        return "--batch, --steps, --grad-accum must be >= 1 and --seq >= 2";
    return "";
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    std::string err = parse(argc, argv, &o);
    if (err == "help") {
        std::fputs(usage, stdout);
        return 0;
    }
    if (!err.empty()) {
        std::fprintf(stderr, "hspmn_lm_bench: %s\n%s", err.c_str(), usage);
        return 2;
    }
    hspmn_context_params cp = hspmn_context_default_params();
    cp.backend = o.backend;
    cp.num_threads = o.threads;
    cp.nan_policy = HSPMN_NAN_PROPAGATE;  // the trainer checks the loss; no scans in the timed loop
    hspmn_context* ctx = nullptr;
    if (!check(hspmn_context_create(&cp, &ctx), "hspmn_context_create")) return 1;
    int32_t backend = 0;
    hspmn_context_backend(ctx, &backend);

    hspmn_model_params mp = hspmn_model_default_params();
    mp.vocab_size = o.vocab;
    mp.num_layers = o.layers;
    mp.block.dim = o.dim;
    mp.block.num_heads = o.heads;
    mp.block.num_kv_heads = o.kv_heads;
    mp.block.mlp_ratio = o.mlp_ratio;
    mp.block.sparsity_k = o.rho;
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

    const int64_t B = o.batch, S = o.seq, L = o.layers;
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

    const double D = o.dim, F = static_cast<double>(o.dim) * o.mlp_ratio, KV = D / o.heads * o.kv_heads;
    const double per_token_dense = 6 * D * F + 2 * D * 3 + 4 * D * KV + 2 * D;  // conv_kernel 3
    const double per_routed = 4 * D * D + 2 * D * (S + 1) / 2.0;

    double timed_s = 0, timed_flops = 0, routed_sum = 0;
    int timed = 0;
    hspmn_alloc_stats_reset_peak();
    for (int step = 0; step < o.warmup + o.steps; ++step) {
        auto t0 = std::chrono::steady_clock::now();
        double routed = 0;
        for (int a = 0; a < o.grad_accum; ++a) {
            for (auto& x : ids) x = static_cast<int32_t>(rng() % static_cast<unsigned>(o.vocab));
            hspmn_tensor_copy_in(tok, ids.data(), B * S * 4);
            hspmn_tensor_copy_in(tgt, ids.data() + 1, B * S * 4);
            hspmn_model_forward_params fp = hspmn_model_forward_default_params();
            fp.training = 1;
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
        const double flops = 3.0 * tokens * (L * (per_token_dense + routed * per_routed) + 2 * D * o.vocab);
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
    std::printf("\nlm train  backend %s  params %.1f M  L=%d D=%d H=%d Hkv=%d F=%d V=%d  B=%lld S=%lld accum %d\n",
                backend == HSPMN_BACKEND_CUDA ? "cuda" : "cpu", total_params / 1e6, o.layers, o.dim, o.heads,
                o.kv_heads, o.dim * o.mlp_ratio, o.vocab, static_cast<long long>(B), static_cast<long long>(S),
                o.grad_accum);
    std::printf("  %.0f tok/s  %.1f ms/step  %.1f model TFLOP/s  MFU %.1f %% of %.0f  peak %.2f GB  routed %.3f\n",
                tokens / timed_s, timed_s / timed * 1e3, tflops, 100.0 * tflops / o.peak_tflops, o.peak_tflops,
                st.peak_bytes / 1e9, routed_sum / timed);
    if (!o.json.empty()) {
        FILE* f = std::fopen(o.json.c_str(), "w");
        if (!f) {
            std::fprintf(stderr, "hspmn_lm_bench: cannot write %s\n", o.json.c_str());
            return 1;
        }
        std::fprintf(f,
                     "{\"mode\": \"lm_train\", \"backend\": \"%s\", \"params\": %lld, \"layers\": %d, \"dim\": %d, "
                     "\"heads\": %d, \"kv_heads\": %d, \"mlp_ratio\": %d, \"vocab\": %d, \"batch\": %lld, "
                     "\"seq\": %lld, \"grad_accum\": %d, \"steps\": %d, \"tokens_per_s\": %.1f, \"ms_per_step\": %.3f, "
                     "\"model_tflops\": %.2f, \"mfu\": %.4f, \"peak_tflops\": %.1f, \"peak_bytes\": %lld, "
                     "\"routed_fraction\": %.4f, \"final_loss\": %.5f}\n",
                     backend == HSPMN_BACKEND_CUDA ? "cuda" : "cpu", static_cast<long long>(total_params), o.layers,
                     o.dim, o.heads, o.kv_heads, o.mlp_ratio, o.vocab, static_cast<long long>(B),
                     static_cast<long long>(S), o.grad_accum, timed, tokens / timed_s, timed_s / timed * 1e3, tflops,
                     tflops / o.peak_tflops, o.peak_tflops, static_cast<long long>(st.peak_bytes), routed_sum / timed,
                     lossv[0]);
        std::fclose(f);
    }
    for (hspmn_tensor* t : {tok, tgt, loss, stats}) hspmn_tensor_destroy(t);
    hspmn_model_destroy(model);
    hspmn_context_destroy(ctx);
    return 0;
}
