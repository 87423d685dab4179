// hspmn_decode_bench: cached decoding (hspmn_decoder_*) through the public C ABI: per-token decode
// latency at given cache lengths (one sequence), time to first token of a long prompt (chunked
// prefill), and batched decode throughput (many slots, one token each per call); of one layer and of
// the whole model. Prints a table and writes JSON. The default shape is the paper's 1B model (24
// layers, D=2048, H=16, Hkv=4, mlp_ratio 4, V=256).
//
//   hspmn_decode_bench [--backend cpu|cuda|auto] [--layers N] [--dim D] [--heads H] [--kv-heads K]
//                      [--mlp-ratio R] [--vocab V] [--contexts 4096,32768] [--prompt 32768]
//                      [--prefill-chunk 8192] [--batch-slots 32] [--batch-context 4096] [--steps N]
//                      [--warmup N] [--rho R] [--threads N] [--json PATH]
//
// Routing. A decode step's cost depends on whether the router selects the token (Q, attention over
// the whole cache, O) or not, and a freshly initialised router selects almost none. So every
// measurement runs twice with the router pinned through router.b of every layer: +30 (every token
// routed: the attention path always taken) and -30 (none routed); w is left as initialised, so
// |x . w| << 30 and the pin holds (each run checks the routed flags of one step). A model routing a
// fraction rho of its tokens per layer costs, per token and layer, (1 - rho) t_none + rho t_all: the
// "rho" columns are that interpolation (not a measurement).
//
// Timing: every hspmn_decoder_append asks for the logits in pinned host memory, so it returns with
// the work done (a sampler needs them on the host); the next token is their argmax. Latency is the
// median over --steps timed steps after --warmup; TTFT is from the first prefill call to the return of
// the last (the prompt in chunks of --prefill-chunk rows, as a server would bound its scratch).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "hspmn.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
    int backend = HSPMN_BACKEND_AUTO;
    int layers = 24, dim = 2048, heads = 16, kv_heads = 4, mlp_ratio = 4, vocab = 256;
    std::vector<int64_t> contexts{4096, 32768};
    int64_t prompt = 32768, prefill_chunk = 8192, batch_context = 4096;
    int batch_slots = 32, steps = 64, warmup = 8, threads = 0;
    float rho = 0.2f;
    std::string json;
    // --long-prompt mode (run_long_prompt): 0 = off
    int64_t long_prompt = 0, long_decode = 64;
    bool long_prefill_all = false, long_decode_all = true;
};

const char* usage =
    "usage: hspmn_decode_bench [--backend cpu|cuda|auto] [--layers N] [--dim D] [--heads H] [--kv-heads K]\n"
    "                          [--mlp-ratio R] [--vocab V] [--contexts 4096,32768] [--prompt 32768]\n"
    "                          [--prefill-chunk 8192] [--batch-slots 32] [--batch-context 4096] [--steps N]\n"
    "                          [--warmup N] [--rho R] [--threads N] [--json PATH]\n"
    "       hspmn_decode_bench --long-prompt N [--long-decode 64] [--long-routed none,all] [--prefill-chunk 8192]\n"
    "                          [model options] [--backend ...] [--json PATH]\n"
    "  --long-prompt: only the long-prompt run: one slot of max_len N + long-decode, the prompt prefilled\n"
    "  in chunks, then long-decode greedy tokens; peak library memory, TTFT and ms/token (run_long_prompt)\n";

hspmn_status g_last_failure = HSPMN_OK;  // of check(): run_long_prompt refuses on OUT_OF_MEMORY

bool check(hspmn_status s, const char* what) {
    if (s == HSPMN_OK) return true;
    g_last_failure = s;
    std::fprintf(stderr, "hspmn_decode_bench: %s failed: %s: %s\n", what, hspmn_status_name(s), hspmn_last_error());
    return false;
}

// Returns an error message, "help", or "" when the options parsed.
std::string parse(int argc, char** argv, Options* o) {
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--help" || a == "-h") return "help";
        if (a.rfind("--", 0) != 0 || i + 1 >= argc) return "expected --option value, got '" + a + "'";
        std::string v = argv[++i];
        char* end = nullptr;
        auto as_long = [&](const std::string& s, int64_t* dst) {
            long long x = std::strtoll(s.c_str(), &end, 10);
            if (s.empty() || *end || x < 0 || x > (int64_t{1} << 31) - 1) return false;
            *dst = x;
            return true;
        };
        auto as_int = [&](int* dst) {
            int64_t x = 0;
            if (!as_long(v, &x)) return false;
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
        else if (a == "--contexts") {
            o->contexts.clear();
            std::size_t p = 0;
            while (ok && p <= v.size()) {
                const std::size_t q = std::min(v.find(',', p), v.size());
                int64_t x = 0;
                ok = as_long(v.substr(p, q - p), &x) && x >= 1;
                o->contexts.push_back(x);
                p = q + 1;
            }
        } else if (a == "--prompt") ok = as_long(v, &o->prompt) && o->prompt >= 1;
        else if (a == "--prefill-chunk") ok = as_long(v, &o->prefill_chunk) && o->prefill_chunk >= 1;
        else if (a == "--batch-slots") ok = as_int(&o->batch_slots);
        else if (a == "--batch-context") ok = as_long(v, &o->batch_context) && o->batch_context >= 1;
        else if (a == "--steps") ok = as_int(&o->steps) && o->steps >= 1;
        else if (a == "--warmup") ok = as_int(&o->warmup);
        else if (a == "--threads") ok = as_int(&o->threads);
        else if (a == "--rho") { o->rho = std::strtof(v.c_str(), &end); ok = !*end && o->rho >= 0 && o->rho <= 1; }
        else if (a == "--json") o->json = v;
        else if (a == "--long-prompt") ok = as_long(v, &o->long_prompt) && o->long_prompt >= 1;
        else if (a == "--long-decode") ok = as_long(v, &o->long_decode) && o->long_decode >= 1;
        else if (a == "--long-routed") {
            // prefill,decode pins: none or all each (default none,all)
            const std::size_t c = v.find(',');
            const std::string pf = v.substr(0, c), dc = c == std::string::npos ? "" : v.substr(c + 1);
            ok = (pf == "none" || pf == "all") && (dc == "none" || dc == "all");
            o->long_prefill_all = pf == "all";
            o->long_decode_all = dc == "all";
        }
        else return "unknown option " + a;
        if (!ok) return "bad value '" + v + "' for " + a;
    }
    if (o->batch_slots < 1) return "--batch-slots must be >= 1";
    return "";
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// One result row; ms is per token (decode), for the whole prompt (ttft) or per step (batched).
struct Row {
    std::string kind;  // "decode", "ttft", "batched"
    int layers;
    int64_t context;   // cache length before the timed steps (decode, batched) or prompt length (ttft)
    int slots;
    bool routed;       // the router pin: every token routed, or none
    double ms, ms_mean;
    double tokens_per_s;
};

class Bench {
public:
    Bench(hspmn_context* ctx, const Options& o, int layers) : ctx_(ctx), o_(o), L_(layers) {}
    ~Bench() {
        for (hspmn_tensor* t : made_) hspmn_tensor_destroy(t);
        if (dec_) hspmn_decoder_destroy(dec_);
        if (model_) hspmn_model_destroy(model_);
    }

    bool create() {
        hspmn_model_params mp = hspmn_model_default_params();
        mp.vocab_size = o_.vocab;
        mp.num_layers = L_;
        mp.block.dim = o_.dim;
        mp.block.num_heads = o_.heads;
        mp.block.num_kv_heads = o_.kv_heads;
        mp.block.mlp_ratio = o_.mlp_ratio;
        mp.block.sparsity_k = o_.rho > 0 ? o_.rho : 0.2f;
        mp.block.routing = HSPMN_ROUTING_THRESHOLD;
        return check(hspmn_model_create(ctx_, &mp, 1234, &model_), "hspmn_model_create");
    }

    // router.b of every layer = +30 (all routed) or -30 (none).
    bool pin_routing(bool all) {
        hspmn_tensor* b = tensor(HSPMN_DTYPE_F32, {1});
        const float v = all ? 30.0f : -30.0f;
        if (!b || !check(hspmn_tensor_copy_in(b, &v, 4), "copy_in")) return false;
        for (int l = 0; l < L_; ++l) {
            const std::string name = "blocks." + std::to_string(l) + ".router.b";
            if (!check(hspmn_model_set_param(model_, name.c_str(), b), "hspmn_model_set_param router.b")) return false;
        }
        routed_ = all;
        return true;
    }

    bool open_decoder(int32_t slots, int64_t max_len) {
        if (dec_ && !check(hspmn_decoder_destroy(dec_), "hspmn_decoder_destroy")) return false;
        dec_ = nullptr;
        return check(hspmn_decoder_create(model_, slots, max_len, &dec_), "hspmn_decoder_create");
    }

    // Empties slots 0..n-1 and appends `len` random tokens to each, in calls of about
    // prefill_chunk rows. Returns the seconds from the first call to the last return, or < 0.
    double prefill(int n, int64_t len, std::vector<int32_t>* next) {
        for (int s = 0; s < n; ++s)
            if (!check(hspmn_decoder_reset(dec_, s), "hspmn_decoder_reset")) return -1;
        const int64_t T = std::max<int64_t>(1, std::min(len, o_.prefill_chunk / n));
        // Every tensor before the clock starts: pinned allocations are slow and not the decoder's.
        hspmn_tensor* slots = slot_tensor(n);
        hspmn_tensor* full = tensor(HSPMN_DTYPE_I32, {n, T});
        hspmn_tensor* tail = len % T ? tensor(HSPMN_DTYPE_I32, {n, len % T}) : nullptr;
        hspmn_tensor* logits = tensor(HSPMN_DTYPE_F32, {n, o_.vocab});
        if (!slots || !full || (len % T && !tail) || !logits) return -1;
        std::vector<int32_t> ids(static_cast<std::size_t>(n * T));
        const auto t0 = Clock::now();
        for (int64_t done = 0; done < len;) {
            const int64_t t = std::min(T, len - done);
            for (auto& x : ids) x = static_cast<int32_t>(rng_() % static_cast<unsigned>(o_.vocab));
            hspmn_tensor* tok = t == T ? full : tail;
            if (!check(hspmn_tensor_copy_in(tok, ids.data(), n * t * 4), "copy_in") ||
                !check(hspmn_decoder_append(dec_, slots, tok, logits, nullptr), "hspmn_decoder_append (prefill)"))
                return -1;
            done += t;
        }
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        return argmax(logits, n, next) ? s : -1;
    }

    // --long-prompt: empties slot 0 and appends `len` random tokens in calls of T rows, asking for the
    // logits (and so waiting) only in the last. Returns the seconds from the first call to the last
    // return, or < 0.
    double prefill_long(int64_t len, int64_t T, std::vector<int32_t>* next) {
        if (!check(hspmn_decoder_reset(dec_, 0), "hspmn_decoder_reset")) return -1;
        hspmn_tensor* slots = slot_tensor(1);
        hspmn_tensor* full = tensor(HSPMN_DTYPE_I32, {1, T});
        hspmn_tensor* tail = len % T ? tensor(HSPMN_DTYPE_I32, {1, len % T}) : nullptr;
        hspmn_tensor* logits = tensor(HSPMN_DTYPE_F32, {1, o_.vocab});
        if (!slots || !full || (len % T && !tail) || !logits) return -1;
        std::vector<int32_t> ids(static_cast<std::size_t>(T));
        const auto t0 = Clock::now();
        for (int64_t done = 0; done < len;) {
            const int64_t t = std::min(T, len - done);
            for (int64_t i = 0; i < t; ++i) ids[static_cast<std::size_t>(i)] = static_cast<int32_t>(rng_() % static_cast<unsigned>(o_.vocab));
            hspmn_tensor* tok = t == T ? full : tail;
            const bool last = done + t == len;
            if (!check(hspmn_tensor_copy_in(tok, ids.data(), t * 4), "copy_in") ||
                !check(hspmn_decoder_append(dec_, slots, tok, last ? logits : nullptr, nullptr),
                       "hspmn_decoder_append (long prefill)"))
                return -1;
            done += t;
        }
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        return argmax(logits, 1, next) ? s : -1;
    }

    // `count` decode calls of one token for slots 0..n-1 fed their greedy tokens; the seconds of each.
    // With check_routing, the first call also reads the routed flags and verifies the pin.
    bool steps(int n, int count, std::vector<int32_t>* next, std::vector<double>* secs, bool check_routing) {
        hspmn_tensor* slots = slot_tensor(n);
        hspmn_tensor* tok = tensor(HSPMN_DTYPE_I32, {n, 1});
        hspmn_tensor* logits = tensor(HSPMN_DTYPE_F32, {n, o_.vocab});
        hspmn_tensor* routed = check_routing ? tensor(HSPMN_DTYPE_I32, {n, 1, L_}) : nullptr;
        if (!slots || !tok || !logits || (check_routing && !routed)) return false;
        for (int i = 0; i < count; ++i) {
            const auto t0 = Clock::now();
            if (!check(hspmn_tensor_copy_in(tok, next->data(), n * 4), "copy_in") ||
                !check(hspmn_decoder_append(dec_, slots, tok, logits, i == 0 ? routed : nullptr),
                       "hspmn_decoder_append (step)") ||
                !argmax(logits, n, next))
                return false;
            secs->push_back(std::chrono::duration<double>(Clock::now() - t0).count());
            if (i == 0 && routed) {
                std::vector<int32_t> r(static_cast<std::size_t>(n * L_));
                if (!check(hspmn_tensor_copy_out(routed, r.data(), n * L_ * 4), "copy_out")) return false;
                for (int32_t x : r)
                    if (x != (routed_ ? 1 : 0)) {
                        std::fprintf(stderr, "hspmn_decode_bench: the router pin (%s) did not hold\n",
                                     routed_ ? "all" : "none");
                        return false;
                    }
            }
        }
        return true;
    }

private:
    hspmn_tensor* tensor(int32_t dtype, std::vector<int64_t> shape) {
        hspmn_tensor* t = nullptr;
        if (!check(hspmn_tensor_create(ctx_, dtype, HSPMN_MEMORY_PINNED, static_cast<int32_t>(shape.size()),
                                       shape.data(), &t),
                   "hspmn_tensor_create"))
            return nullptr;
        made_.push_back(t);
        return t;
    }
    hspmn_tensor* slot_tensor(int n) {
        hspmn_tensor* t = tensor(HSPMN_DTYPE_I32, {n});
        std::vector<int32_t> s(static_cast<std::size_t>(n));
        for (int i = 0; i < n; ++i) s[i] = i;
        return t && check(hspmn_tensor_copy_in(t, s.data(), n * 4), "copy_in") ? t : nullptr;
    }
    bool argmax(hspmn_tensor* logits, int n, std::vector<int32_t>* next) {
        std::vector<float> v(static_cast<std::size_t>(n) * o_.vocab);
        if (!check(hspmn_tensor_copy_out(logits, v.data(), static_cast<int64_t>(v.size()) * 4), "copy_out"))
            return false;
        next->resize(static_cast<std::size_t>(n));
        for (int j = 0; j < n; ++j) {
            const float* r = v.data() + static_cast<std::size_t>(j) * o_.vocab;
            (*next)[j] = static_cast<int32_t>(std::max_element(r, r + o_.vocab) - r);
        }
        return true;
    }

    hspmn_context* ctx_;
    const Options& o_;
    int L_;
    hspmn_model* model_ = nullptr;
    hspmn_decoder* dec_ = nullptr;
    bool routed_ = false;
    std::vector<hspmn_tensor*> made_;
    std::mt19937 rng_{7};
};

// Every measurement of one model (layers L); false on the first failure.
bool run_model(hspmn_context* ctx, const Options& o, int L, std::vector<Row>* rows) {
    Bench b(ctx, o, L);
    if (!b.create()) return false;
    const int64_t extra = o.warmup + o.steps + 1;
    int64_t max_ctx = o.prompt;
    for (int64_t c : o.contexts) max_ctx = std::max(max_ctx, c);
    std::vector<int32_t> next;
    std::vector<double> secs;
    for (bool all : {false, true}) {
        if (!b.pin_routing(all)) return false;
        // One sequence: decode latency at each cache length, then the long prompt's TTFT.
        if (!b.open_decoder(1, max_ctx + extra)) return false;
        for (int64_t c : o.contexts) {
            if (b.prefill(1, c, &next) < 0) return false;
            secs.clear();
            if (!b.steps(1, o.warmup + o.steps, &next, &secs, true)) return false;
            std::vector<double> timed(secs.begin() + o.warmup, secs.end());
            double mean = 0;
            for (double s : timed) mean += s / static_cast<double>(timed.size());
            const double med = median(timed);
            rows->push_back({"decode", L, c, 1, all, med * 1e3, mean * 1e3, 1.0 / med});
            std::printf("  L=%-3d %-5s decode  cache %-7lld  %8.3f ms/token (mean %.3f)\n", L, all ? "all" : "none",
                        static_cast<long long>(c), med * 1e3, mean * 1e3);
        }
        // A first prefill of this shape sizes the scratch and plans: warm it up, then time a fresh slot.
        if (b.prefill(1, std::min(o.prompt, o.prefill_chunk), &next) < 0) return false;
        const double ttft = b.prefill(1, o.prompt, &next);
        if (ttft < 0) return false;
        rows->push_back({"ttft", L, o.prompt, 1, all, ttft * 1e3, ttft * 1e3, o.prompt / ttft});
        std::printf("  L=%-3d %-5s ttft    prompt %-6lld  %8.1f ms (%.0f prompt tok/s, chunks of %lld rows)\n", L,
                    all ? "all" : "none", static_cast<long long>(o.prompt), ttft * 1e3, o.prompt / ttft,
                    static_cast<long long>(std::min(o.prompt, o.prefill_chunk)));
        // Many slots: one token each per call.
        const int n = o.batch_slots;
        if (!b.open_decoder(n, o.batch_context + extra)) return false;
        if (b.prefill(n, o.batch_context, &next) < 0) return false;
        secs.clear();
        if (!b.steps(n, o.warmup + o.steps, &next, &secs, true)) return false;
        std::vector<double> timed(secs.begin() + o.warmup, secs.end());
        double mean = 0;
        for (double s : timed) mean += s / static_cast<double>(timed.size());
        const double med = median(timed);
        rows->push_back({"batched", L, o.batch_context, n, all, med * 1e3, mean * 1e3, n / med});
        std::printf("  L=%-3d %-5s batched %d slots, cache %-6lld  %8.3f ms/step  %.0f tok/s\n", L, all ? "all" : "none",
                    n, static_cast<long long>(o.batch_context), med * 1e3, n / med);
    }
    return true;
}

const Row* find(const std::vector<Row>& rows, const char* kind, int L, int64_t c, bool all) {
    for (const Row& r : rows)
        if (r.kind == kind && r.layers == L && r.context == c && r.routed == all) return &r;
    return nullptr;
}

// ---- the long-prompt run (--long-prompt) ----------------------------------------------------------
//
// One sequence of --long-prompt tokens (issue 9: 1,048,576 on one 80 GB H100) prefilled through
// hspmn_decoder_append in chunks of --prefill-chunk rows, then --long-decode greedy steps of one token.
// The decoder's caches are allocated at create (max_seqs 1, max_len = prompt + long-decode), and every
// call's scratch is bounded by its rows (native/README.md "Memory of a long forward"), so the peak is
// the model, the caches and one chunk's scratch. Before anything is timed: the model's bytes
// (measured), the caches' bytes (computed) and the chunk scratch (estimated) are printed, and the run
// is refused with those bytes when the decoder's caches or a first prefill chunk do not fit.
//
// Routing is pinned through router.b as in the main bench (--long-routed PREFILL,DECODE, each none or
// all; default none,all): an all-routed prefill of 1M tokens is ~S^2 attention (minutes per layer at
// 1M), while an all-routed decode step attends the whole 1M cache in every layer, the worst case of a
// step. TTFT is from the first prefill call to the return of the last (the only one asking for logits,
// as a server that samples after the prompt would); ms/token is per decode step (logits to the host,
// argmax fed back).

struct LongResult {
    int64_t model_bytes = 0, cache_bytes = 0, scratch_bytes = 0, peak_bytes = 0;
    double ttft_s = 0, decode_ms_median = 0, decode_ms_mean = 0, decode_ms_first = 0;
};

// The decoder's caches (core/backend.h DecodeCall): per layer K and V [max_len, Hkv*Dh] and the conv
// tail [conv_kernel - 1, D], in elements of `elem` bytes (2: bf16 on CUDA, 4: f32 on the CPU).
int64_t long_cache_bytes(const Options& o, int64_t max_len, int64_t elem) {
    const int64_t KV = static_cast<int64_t>(o.dim) / o.heads * o.kv_heads;
    const int64_t conv_kernel = hspmn_block_default_params().conv_kernel;  // Bench::create keeps the default
    return o.layers * (2 * max_len * KV + (conv_kernel - 1) * o.dim) * elem;
}

// One prefill call's scratch, an estimate: the rows pass per row (CudaBlock::chunk_row_bytes at the
// default conv kernel and mlp ratio) plus the decoder's own [T, D] buffers and routed flags.
int64_t long_scratch_bytes(const Options& o, int64_t T) {
    const int64_t D = o.dim, F = o.dim * o.mlp_ratio, Dh = o.dim / o.heads, KV = Dh * o.kv_heads;
    const int64_t per_row = 8 + 8 * D + 6 * F + 4 * D + 4 * std::max(KV, D) + 4 * KV + 4 * o.heads + 4 * Dh + 28;
    return T * (per_row + 3 * 2 * D + 4 * o.layers + 4);
}

void print_gb(const char* what, int64_t bytes) {
    std::printf("  %-34s %16lld bytes  %8.2f GB  %8.2f GiB\n", what, static_cast<long long>(bytes), bytes / 1e9,
                bytes / static_cast<double>(int64_t{1} << 30));
}

int run_long_prompt(hspmn_context* ctx, const Options& o, int32_t backend) {
    const int64_t prompt = o.long_prompt, steps = o.long_decode, max_len = prompt + steps;
    const int64_t T = std::min(prompt, o.prefill_chunk);
    const int64_t elem = backend == HSPMN_BACKEND_CUDA ? 2 : 4;
    std::printf("long prompt  backend %s  layers %d D=%d H=%d Hkv=%d F=%d V=%d  prompt %lld (chunks of %lld)  "
                "decode %lld  routed: prefill %s, decode %s\n",
                backend == HSPMN_BACKEND_CUDA ? "cuda" : "cpu", o.layers, o.dim, o.heads, o.kv_heads,
                o.dim * o.mlp_ratio, o.vocab, static_cast<long long>(prompt), static_cast<long long>(T),
                static_cast<long long>(steps), o.long_prefill_all ? "all" : "none", o.long_decode_all ? "all" : "none");
    LongResult r;
    hspmn_alloc_stats st;
    hspmn_alloc_stats_get(&st);
    const int64_t live0 = st.live_bytes;
    hspmn_alloc_stats_reset_peak();
    Bench b(ctx, o, o.layers);
    r.cache_bytes = long_cache_bytes(o, max_len, elem);
    if (!b.create()) {
        if (g_last_failure == HSPMN_ERR_OUT_OF_MEMORY)
            std::fprintf(stderr, "hspmn_decode_bench: refused: the model does not fit this device, and its decoder's "
                         "caches for %lld tokens would need %lld bytes (%.2f GB) more\n",
                         static_cast<long long>(max_len), static_cast<long long>(r.cache_bytes), r.cache_bytes / 1e9);
        return 1;
    }
    hspmn_alloc_stats_get(&st);
    r.model_bytes = st.live_bytes - live0;
    r.scratch_bytes = long_scratch_bytes(o, T);
    const int64_t need = r.model_bytes + r.cache_bytes + r.scratch_bytes;
    std::printf("memory needed:\n");
    print_gb("model (measured)", r.model_bytes);
    print_gb("decoder caches (K/V, conv tail)", r.cache_bytes);
    print_gb("one prefill chunk's scratch (est.)", r.scratch_bytes);
    print_gb("total", need);
    std::fflush(stdout);
    auto refuse = [&](const char* what) {
        if (g_last_failure != HSPMN_ERR_OUT_OF_MEMORY) return 1;  // another failure: check() said it
        std::fprintf(stderr,
                     "hspmn_decode_bench: refused: %s failed, so a %lld-token prompt plus %lld decoded tokens does "
                     "not fit this device: it needs %lld bytes (%.2f GB): model %lld + decoder caches %lld + one "
                     "prefill chunk's scratch ~%lld (see the lines above)\n",
                     what, static_cast<long long>(prompt), static_cast<long long>(steps), static_cast<long long>(need),
                     need / 1e9, static_cast<long long>(r.model_bytes), static_cast<long long>(r.cache_bytes),
                     static_cast<long long>(r.scratch_bytes));
        return 1;
    };
    if (!b.pin_routing(o.long_prefill_all)) return 1;
    if (!b.open_decoder(1, max_len)) return refuse("hspmn_decoder_create");
    // A first chunk sizes the scratch and the GEMM plans before the clock starts; then an empty slot.
    std::vector<int32_t> next;
    if (b.prefill(1, T, &next) < 0) return refuse("the first prefill chunk");
    const double ttft = b.prefill_long(prompt, T, &next);
    if (ttft < 0) return 1;
    r.ttft_s = ttft;
    std::printf("  prefill %lld tokens: TTFT %.3f s (%.0f prompt tok/s)\n", static_cast<long long>(prompt), ttft,
                prompt / ttft);
    std::fflush(stdout);
    if (!b.pin_routing(o.long_decode_all)) return 1;
    std::vector<double> secs;
    if (!b.steps(1, static_cast<int>(steps), &next, &secs, true)) return 1;
    double mean = 0;
    for (double x : secs) mean += x / static_cast<double>(secs.size());
    r.decode_ms_median = median(secs) * 1e3;
    r.decode_ms_mean = mean * 1e3;
    r.decode_ms_first = secs.front() * 1e3;
    hspmn_alloc_stats_get(&st);
    r.peak_bytes = st.peak_bytes;
    std::printf("  decode %lld tokens after the prompt: %.3f ms/token median (mean %.3f, first %.3f)\n",
                static_cast<long long>(steps), r.decode_ms_median, r.decode_ms_mean, r.decode_ms_first);
    std::printf("long prompt: %lld tokens then %lld decoded: peak library memory %lld bytes (%.2f GB, %.2f GiB), "
                "TTFT %.3f s, %.3f ms/token\n",
                static_cast<long long>(prompt), static_cast<long long>(steps), static_cast<long long>(r.peak_bytes),
                r.peak_bytes / 1e9, r.peak_bytes / static_cast<double>(int64_t{1} << 30), r.ttft_s, r.decode_ms_median);
    if (!o.json.empty()) {
        FILE* f = std::fopen(o.json.c_str(), "w");
        if (!f) {
            std::fprintf(stderr, "hspmn_decode_bench: cannot write %s\n", o.json.c_str());
            return 1;
        }
        std::fprintf(f,
                     "{\"mode\": \"long_prompt\", \"backend\": \"%s\", \"layers\": %d, \"dim\": %d, \"heads\": %d, "
                     "\"kv_heads\": %d, \"mlp_ratio\": %d, \"vocab\": %d, \"prompt\": %lld, \"decode\": %lld, "
                     "\"prefill_chunk\": %lld, \"prefill_routed\": \"%s\", \"decode_routed\": \"%s\", "
                     "\"model_bytes\": %lld, \"cache_bytes\": %lld, \"scratch_bytes_estimate\": %lld, "
                     "\"peak_bytes\": %lld, \"ttft_s\": %.4f, \"decode_ms_median\": %.4f, \"decode_ms_mean\": %.4f, "
                     "\"decode_ms_first\": %.4f}\n",
                     backend == HSPMN_BACKEND_CUDA ? "cuda" : "cpu", o.layers, o.dim, o.heads, o.kv_heads, o.mlp_ratio,
                     o.vocab, static_cast<long long>(prompt), static_cast<long long>(steps), static_cast<long long>(T),
                     o.long_prefill_all ? "all" : "none", o.long_decode_all ? "all" : "none",
                     static_cast<long long>(r.model_bytes), static_cast<long long>(r.cache_bytes),
                     static_cast<long long>(r.scratch_bytes), static_cast<long long>(r.peak_bytes), r.ttft_s,
                     r.decode_ms_median, r.decode_ms_mean, r.decode_ms_first);
        std::fclose(f);
    }
    return 0;
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
        std::fprintf(stderr, "hspmn_decode_bench: %s\n%s", err.c_str(), usage);
        return 2;
    }
    hspmn_context_params cp = hspmn_context_default_params();
    cp.backend = o.backend;
    cp.num_threads = o.threads;
    hspmn_context* ctx = nullptr;
    if (!check(hspmn_context_create(&cp, &ctx), "hspmn_context_create")) return 1;
    int32_t backend = 0;
    hspmn_context_backend(ctx, &backend);
    const char* backend_name = backend == HSPMN_BACKEND_CUDA ? "cuda" : "cpu";
    if (o.long_prompt > 0) {
        const int rc = run_long_prompt(ctx, o, backend);
        hspmn_context_destroy(ctx);
        return rc;
    }
    std::printf("decode bench  backend %s  D=%d H=%d Hkv=%d F=%d V=%d  layers 1 and %d  steps %d (+%d warm-up)\n",
                backend_name, o.dim, o.heads, o.kv_heads, o.dim * o.mlp_ratio, o.vocab, o.layers, o.steps, o.warmup);

    std::vector<Row> rows;
    std::vector<int> models{1};
    if (o.layers != 1) models.push_back(o.layers);
    hspmn_alloc_stats_reset_peak();
    bool ok = true;
    for (int L : models) ok = ok && run_model(ctx, o, L, &rows);
    hspmn_alloc_stats st;
    hspmn_alloc_stats_get(&st);
    hspmn_context_destroy(ctx);
    if (!ok) return 1;

    // The table: none / all measured, rho interpolated per token (module comment).
    const double r = o.rho;
    auto mix = [&](double none, double all) { return (1 - r) * none + r * all; };
    std::printf("\n%-8s %-7s %-22s %12s %12s %12s  %s\n", "layers", "what", "shape", "none routed", "all routed",
                "rho interp.", "unit");
    for (int L : models) {
        for (int64_t c : o.contexts) {
            const Row *a = find(rows, "decode", L, c, false), *b = find(rows, "decode", L, c, true);
            std::printf("%-8d %-7s %-22s %12.3f %12.3f %12.3f  ms/token\n", L, "decode",
                        ("B=1 cache " + std::to_string(c)).c_str(), a->ms, b->ms, mix(a->ms, b->ms));
        }
        const Row *a = find(rows, "ttft", L, o.prompt, false), *b = find(rows, "ttft", L, o.prompt, true);
        std::printf("%-8d %-7s %-22s %12.1f %12.1f %12.1f  ms\n", L, "ttft", ("prompt " + std::to_string(o.prompt)).c_str(),
                    a->ms, b->ms, mix(a->ms, b->ms));
        a = find(rows, "batched", L, o.batch_context, false);
        b = find(rows, "batched", L, o.batch_context, true);
        const double step = mix(a->ms, b->ms);
        std::printf("%-8d %-7s %-22s %12.0f %12.0f %12.0f  tok/s (%d slots)\n", L, "batched",
                    (std::to_string(o.batch_slots) + " x cache " + std::to_string(o.batch_context)).c_str(),
                    a->tokens_per_s, b->tokens_per_s, o.batch_slots / step * 1e3, o.batch_slots);
    }
    std::printf("peak memory %.2f GB\n", st.peak_bytes / 1e9);

    if (!o.json.empty()) {
        FILE* f = std::fopen(o.json.c_str(), "w");
        if (!f) {
            std::fprintf(stderr, "hspmn_decode_bench: cannot write %s\n", o.json.c_str());
            return 1;
        }
        std::fprintf(f,
                     "{\"mode\": \"decode\", \"backend\": \"%s\", \"layers\": %d, \"dim\": %d, \"heads\": %d, "
                     "\"kv_heads\": %d, \"mlp_ratio\": %d, \"vocab\": %d, \"steps\": %d, \"warmup\": %d, "
                     "\"prefill_chunk\": %lld, \"rho\": %.3f, \"peak_bytes\": %lld, \"results\": [",
                     backend_name, o.layers, o.dim, o.heads, o.kv_heads, o.mlp_ratio, o.vocab, o.steps, o.warmup,
                     static_cast<long long>(o.prefill_chunk), o.rho, static_cast<long long>(st.peak_bytes));
        for (std::size_t i = 0; i < rows.size(); ++i) {
            const Row& w = rows[i];
            std::fprintf(f,
                         "%s\n  {\"kind\": \"%s\", \"layers\": %d, \"context\": %lld, \"slots\": %d, \"routed\": \"%s\", "
                         "\"ms\": %.4f, \"ms_mean\": %.4f, \"tokens_per_s\": %.1f}",
                         i ? "," : "", w.kind.c_str(), w.layers, static_cast<long long>(w.context), w.slots,
                         w.routed ? "all" : "none", w.ms, w.ms_mean, w.tokens_per_s);
        }
        std::fprintf(f, "\n]}\n");
        std::fclose(f);
    }
    return 0;
}
