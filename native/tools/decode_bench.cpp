// hspmn_decode_bench: cached decoding (hspmn_decoder_*) through the public C ABI: per-token decode
// latency at given cache lengths (one sequence), time to first token of a long prompt (chunked
// prefill), and batched decode throughput (many slots, one token each per call); of one layer and of
// the whole model. Prints a table and writes JSON. The default shape is the paper's 1B model (24
// layers, D=2048, H=16, Hkv=4, mlp_ratio 4, V=256).
//
//   hspmn_decode_bench [--backend cpu|cuda|auto] [--layers N] [--dim D] [--heads H] [--kv-heads K]
//                      [--mlp-ratio R] [--vocab V] [--contexts 4096,32768] [--prompt 32768]
//                      [--prefill-chunk 8192] [--batch-slots 32] [--batch-context 4096] [--steps N]
//                      [--warmup N] [--rho R] [--routing none,all,calibrated] [--paths append,step,graph]
//                      [--calib-tokens 4096] [--bandwidth-gbs 3350] [--threads N] [--json PATH]
//
// Paths. "append": hspmn_decoder_append with the logits copied to pinned host memory and the next
// token their argmax on the host (the path before device sampling: the baseline). "step":
// hspmn_decoder_step, greedy sampling on the backend, only ids come back. "graph": the same after
// hspmn_decoder_capture of the batch size (CUDA only), one graph launch per step.
//
// Routing. A decode step's cost depends on whether the router selects the token (Q, attention over
// the whole cache, O) or not. "none" / "all" pin router.b of every layer at -30 / +30 (w is left as
// initialised, so |x . w| << 30 and the pin holds; each run checks the routed flags of the prefill).
// "calibrated" sets each layer's router.b, layer by layer, so that a fraction rho of a prompt of
// --calib-tokens random tokens is routed in that layer (bisection on b against the routed fraction
// hspmn_model_forward reports: the (1 - rho) quantile of the layer's router logits), and prints the
// fraction each layer then routes in the timed runs' prefills.
//
// Timing: wall clock around each call, which returns with the work done; latency is the median over
// --steps timed steps after --warmup; TTFT is from the first prefill call to the return of the last
// (the prompt in chunks of --prefill-chunk rows, as a server would bound its scratch). The floor of a
// B=1 step is the bytes it must read (every weight the step uses, plus K/V of the cache when routed)
// over --bandwidth-gbs (default: the H100 SXM datasheet's 3,350 GB/s).
#include <algorithm>
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
using Clock = std::chrono::steady_clock;

const char* const kTool = "hspmn_decode_bench";

struct Options {
    int32_t backend = HSPMN_BACKEND_AUTO;
    ModelShape shape;
    std::vector<int64_t> contexts{4096, 32768};
    int64_t prompt = 32768, prefill_chunk = 8192, batch_context = 4096;
    int batch_slots = 32, steps = 64, warmup = 8, threads = 0;
    float rho = 0.2f;
    std::vector<std::string> routings{"none", "all", "calibrated"};
    std::vector<std::string> paths{"append", "step", "graph"};
    int64_t calib_tokens = 4096;
    double bandwidth_gbs = 3350.0;
    std::string json;
    // --long-prompt mode (run_long_prompt): 0 = off
    int64_t long_prompt = 0, long_decode = 64;
    bool long_prefill_all = false, long_decode_all = true;
};

const char* usage =
    "usage: hspmn_decode_bench [--backend cpu|cuda|auto] [--layers N] [--dim D] [--heads H] [--kv-heads K]\n"
    "                          [--mlp-ratio R] [--vocab V] [--contexts 4096,32768] [--prompt 32768]\n"
    "                          [--prefill-chunk 8192] [--batch-slots 32] [--batch-context 4096] [--steps N]\n"
    "                          [--warmup N] [--rho R] [--routing none,all,calibrated]\n"
    "                          [--paths append,step,graph] [--calib-tokens N] [--bandwidth-gbs G]\n"
    "                          [--threads N] [--json PATH]\n"
    "       hspmn_decode_bench --long-prompt N [--long-decode 64] [--long-routed none,all] [--prefill-chunk 8192]\n"
    "                          [model options] [--backend ...] [--json PATH]\n"
    "  --long-prompt: only the long-prompt run: one slot of max_len N + long-decode, the prompt prefilled\n"
    "  in chunks, then long-decode greedy tokens; peak library memory, TTFT and ms/token (run_long_prompt)\n";

hspmn_status g_last_failure = HSPMN_OK;  // of check(): run_long_prompt refuses on OUT_OF_MEMORY

bool check(hspmn_status s, const char* what) {
    if (s != HSPMN_OK) g_last_failure = s;
    return hspmn_tool::check(kTool, s, what);
}

// A comma-separated list of the allowed words.
bool parse_words(const std::string& v, const std::vector<std::string>& allowed, std::vector<std::string>* out) {
    *out = split_list(v);
    for (const std::string& w : *out)
        if (std::find(allowed.begin(), allowed.end(), w) == allowed.end()) return false;
    return true;
}

// Returns an error message, "help", or "" when the options parsed.
std::string parse(int argc, char** argv, Options* o) {
    const std::string err = parse_options(argc, argv, [o](const std::string& a, const std::string& v, bool* ok) {
        if (o->shape.parse(a, v, ok) ||
            take_count(a, v,
                       {{"--batch-slots", &o->batch_slots}, {"--steps", &o->steps}, {"--warmup", &o->warmup},
                        {"--threads", &o->threads}},
                       ok))
            return true;
        const int64_t kMax = (int64_t{1} << 31) - 1;
        if (a == "--backend") *ok = parse_backend(v, &o->backend);
        else if (a == "--contexts") {
            o->contexts.clear();
            for (const std::string& item : split_list(v)) {
                int64_t x = 0;
                *ok = *ok && parse_int(item, 1, kMax, &x);
                o->contexts.push_back(x);
            }
        } else if (a == "--prompt") *ok = parse_int(v, 1, kMax, &o->prompt);
        else if (a == "--prefill-chunk") *ok = parse_int(v, 1, kMax, &o->prefill_chunk);
        else if (a == "--batch-context") *ok = parse_int(v, 1, kMax, &o->batch_context);
        else if (a == "--rho") *ok = parse_number(v, &o->rho) && o->rho >= 0 && o->rho <= 1;
        else if (a == "--routing") *ok = parse_words(v, {"none", "all", "calibrated"}, &o->routings);
        else if (a == "--paths") *ok = parse_words(v, {"append", "step", "graph"}, &o->paths);
        else if (a == "--calib-tokens") *ok = parse_int(v, 16, kMax, &o->calib_tokens);
        else if (a == "--bandwidth-gbs") *ok = parse_number(v, &o->bandwidth_gbs) && o->bandwidth_gbs > 0;
        else if (a == "--json") o->json = v;
        else if (a == "--long-prompt") *ok = parse_int(v, 1, kMax, &o->long_prompt);
        else if (a == "--long-decode") *ok = parse_int(v, 1, kMax, &o->long_decode);
        else if (a == "--long-routed") {
            // prefill,decode pins: none or all each (default none,all)
            std::vector<std::string> pins;
            *ok = parse_words(v, {"none", "all"}, &pins) && pins.size() == 2;
            o->long_prefill_all = *ok && pins[0] == "all";
            o->long_decode_all = *ok && pins[1] == "all";
        } else return false;
        return true;
    });
    if (!err.empty()) return err;
    if (o->batch_slots < 1 || o->steps < 1) return "--batch-slots and --steps must be >= 1";
    return "";
}

// One result row; ms is per token (decode), for the whole prompt (ttft) or per step (batched).
struct Row {
    std::string kind;     // "decode", "ttft", "batched"
    std::string path;     // "append", "step", "graph" ("prefill" for ttft)
    std::string routing;  // "none", "all", "calibrated"
    int layers;
    int64_t context;      // cache length before the timed steps (decode, batched) or prompt length (ttft)
    int slots;
    double ms, ms_mean;
    double tokens_per_s;
    double routed_fraction;  // of the prefill before the run, over tokens x layers (-1: not read)
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
        hspmn_model_params mp = o_.shape.params(o_.rho > 0 ? o_.rho : 0.2f);
        mp.num_layers = L_;
        mp.block.routing = HSPMN_ROUTING_THRESHOLD;
        return check(hspmn_model_create(ctx_, &mp, 1234, &model_), "hspmn_model_create");
    }

    bool set_router_b(int layer, float v) {
        if (!b_) b_ = tensor(HSPMN_DTYPE_F32, {1});
        const std::string name = "blocks." + std::to_string(layer) + ".router.b";
        return b_ && check(hspmn_tensor_copy_in(b_, &v, 4), "copy_in") &&
               check(hspmn_model_set_param(model_, name.c_str(), b_), "hspmn_model_set_param router.b");
    }

    // router.b of every layer = +30 (all routed), -30 (none), or calibrated to route rho.
    bool set_routing(const std::string& routing) {
        routing_ = routing;
        if (routing == "calibrated") return calibrate();
        for (int l = 0; l < L_; ++l)
            if (!set_router_b(l, routing == "all" ? 30.0f : -30.0f)) return false;
        return true;
    }

    // Layer by layer (a layer's input depends on the layers before it only): bisection on b until the
    // layer routes round(rho * tokens) of the calibration prompt, as hspmn_model_forward counts them.
    bool calibrate() {
        const int64_t S = o_.calib_tokens;
        hspmn_tensor* tok = tensor(HSPMN_DTYPE_I32, {1, S});
        hspmn_tensor* tgt = tensor(HSPMN_DTYPE_I32, {1, S});
        hspmn_tensor* loss = tensor(HSPMN_DTYPE_F32, {2});
        hspmn_tensor* stats = tensor(HSPMN_DTYPE_F32, {L_, 2});
        if (!tok || !tgt || !loss || !stats) return false;
        std::vector<int32_t> ids(static_cast<std::size_t>(S));
        std::mt19937 rng(99);
        for (auto& x : ids) x = static_cast<int32_t>(rng() % static_cast<unsigned>(o_.shape.vocab));
        if (!check(hspmn_tensor_copy_in(tok, ids.data(), S * 4), "copy_in") ||
            !check(hspmn_tensor_copy_in(tgt, ids.data(), S * 4), "copy_in"))
            return false;
        hspmn_model_forward_params fp = hspmn_model_forward_default_params();
        fp.training = 0;
        fp.aux_target = -1.0f;
        const double want = o_.rho;
        std::vector<float> st(static_cast<std::size_t>(L_) * 2);
        auto fraction = [&](int layer, double* out) {
            if (!check(hspmn_model_forward(model_, &fp, tok, tgt, loss, stats), "hspmn_model_forward (calibration)") ||
                !check(hspmn_tensor_copy_out(stats, st.data(), L_ * 8), "copy_out"))
                return false;
            *out = st[static_cast<std::size_t>(layer) * 2 + 1];
            return true;
        };
        calib_.assign(static_cast<std::size_t>(L_), 0.0);
        for (int l = 0; l < L_; ++l) {
            double lo = -30.0, hi = 30.0, f = 0.0;  // routed fraction rises with b
            for (int it = 0; it < 24 && hi - lo > 1e-6; ++it) {
                const double mid = 0.5 * (lo + hi);
                if (!set_router_b(l, static_cast<float>(mid)) || !fraction(l, &f)) return false;
                if (std::fabs(f - want) <= 0.5 / static_cast<double>(S)) {
                    lo = hi = mid;
                    break;
                }
                (f < want ? lo : hi) = mid;
            }
            if (!set_router_b(l, static_cast<float>(0.5 * (lo + hi))) || !fraction(l, &f)) return false;
            calib_[static_cast<std::size_t>(l)] = f;
        }
        double mean = 0, mn = 1, mx = 0;
        for (double f : calib_) {
            mean += f / L_;
            mn = std::min(mn, f);
            mx = std::max(mx, f);
        }
        std::printf("  L=%-3d calibrated router.b: routed fraction of %lld calibration tokens per layer mean %.3f "
                    "(min %.3f, max %.3f; rho %.2f)\n",
                    L_, static_cast<long long>(S), mean, mn, mx, o_.rho);
        return true;
    }

    bool open_decoder(int32_t slots, int64_t max_len) {
        if (dec_ && !check(hspmn_decoder_destroy(dec_), "hspmn_decoder_destroy")) return false;
        dec_ = nullptr;
        captured_ = 0;
        return check(hspmn_decoder_create(model_, slots, max_len, &dec_), "hspmn_decoder_create");
    }

    // Empties slots 0..n-1 and appends `len` random tokens to each, in calls of about
    // prefill_chunk rows. Returns the seconds from the first call to the last return, or < 0. The
    // routed fraction of the prefill (tokens x layers) goes to *routed when not null.
    double prefill(int n, int64_t len, std::vector<int32_t>* next, double* routed = nullptr) {
        for (int s = 0; s < n; ++s)
            if (!check(hspmn_decoder_reset(dec_, s), "hspmn_decoder_reset")) return -1;
        const int64_t T = std::max<int64_t>(1, std::min(len, o_.prefill_chunk / n));
        // Every tensor before the clock starts: pinned allocations are slow and not the decoder's.
        hspmn_tensor* slots = slot_tensor(n);
        hspmn_tensor* full = tensor(HSPMN_DTYPE_I32, {n, T});
        hspmn_tensor* tail = len % T ? tensor(HSPMN_DTYPE_I32, {n, len % T}) : nullptr;
        hspmn_tensor* logits = tensor(HSPMN_DTYPE_F32, {n, o_.shape.vocab});
        hspmn_tensor* rt_full = routed ? tensor(HSPMN_DTYPE_I32, {n, T, L_}) : nullptr;
        hspmn_tensor* rt_tail = routed && len % T ? tensor(HSPMN_DTYPE_I32, {n, len % T, L_}) : nullptr;
        if (!slots || !full || (len % T && !tail) || !logits || (routed && !rt_full) ||
            (routed && len % T && !rt_tail))
            return -1;
        std::vector<int32_t> ids(static_cast<std::size_t>(n * T)), flags;
        int64_t on = 0, seen = 0;
        double s = 0;
        for (int64_t done = 0; done < len;) {
            const int64_t t = std::min(T, len - done);
            for (auto& x : ids) x = static_cast<int32_t>(rng_() % static_cast<unsigned>(o_.shape.vocab));
            hspmn_tensor* tok = t == T ? full : tail;
            hspmn_tensor* rt = routed ? (t == T ? rt_full : rt_tail) : nullptr;
            if (!check(hspmn_tensor_copy_in(tok, ids.data(), n * t * 4), "copy_in")) return -1;
            const auto t0 = Clock::now();
            if (!check(hspmn_decoder_append(dec_, slots, tok, logits, rt), "hspmn_decoder_append (prefill)")) return -1;
            s += std::chrono::duration<double>(Clock::now() - t0).count();
            if (rt) {
                flags.resize(static_cast<std::size_t>(n * t * L_));
                if (!check(hspmn_tensor_copy_out(rt, flags.data(), n * t * L_ * 4), "copy_out")) return -1;
                for (int32_t f : flags) on += f;
                seen += static_cast<int64_t>(flags.size());
            }
            done += t;
        }
        if (routed) *routed = static_cast<double>(on) / static_cast<double>(std::max<int64_t>(seen, 1));
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
        hspmn_tensor* logits = tensor(HSPMN_DTYPE_F32, {1, o_.shape.vocab});
        if (!slots || !full || (len % T && !tail) || !logits) return -1;
        std::vector<int32_t> ids(static_cast<std::size_t>(T));
        const auto t0 = Clock::now();
        for (int64_t done = 0; done < len;) {
            const int64_t t = std::min(T, len - done);
            for (int64_t i = 0; i < t; ++i) ids[static_cast<std::size_t>(i)] = static_cast<int32_t>(rng_() % static_cast<unsigned>(o_.shape.vocab));
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

    // `count` decode calls of one token for slots 0..n-1 fed their greedy tokens, by `path`; the
    // seconds of each.
    bool steps(const std::string& path, int n, int count, std::vector<int32_t>* next, std::vector<double>* secs) {
        if (path == "append") return steps_append(n, count, next, secs);
        if (path == "graph" && captured_ != n) {
            const int32_t size = n;
            if (!check(hspmn_decoder_capture(dec_, &size, 1), "hspmn_decoder_capture")) return false;
            captured_ = n;
        }
        std::vector<int32_t> slots(static_cast<std::size_t>(n)), out(static_cast<std::size_t>(n));
        for (int j = 0; j < n; ++j) slots[j] = j;
        std::vector<hspmn_sampling_params> params(static_cast<std::size_t>(n), hspmn_sampling_default_params());
        for (int i = 0; i < count; ++i) {
            const auto t0 = Clock::now();
            if (!check(hspmn_decoder_step(dec_, n, slots.data(), next->data(), params.data(), out.data(), nullptr),
                       "hspmn_decoder_step"))
                return false;
            secs->push_back(std::chrono::duration<double>(Clock::now() - t0).count());
            next->swap(out);
        }
        return true;
    }

    const std::vector<double>& calibration() const { return calib_; }

private:
    bool steps_append(int n, int count, std::vector<int32_t>* next, std::vector<double>* secs) {
        hspmn_tensor* slots = slot_tensor(n);
        hspmn_tensor* tok = tensor(HSPMN_DTYPE_I32, {n, 1});
        hspmn_tensor* logits = tensor(HSPMN_DTYPE_F32, {n, o_.shape.vocab});
        if (!slots || !tok || !logits) return false;
        for (int i = 0; i < count; ++i) {
            const auto t0 = Clock::now();
            if (!check(hspmn_tensor_copy_in(tok, next->data(), n * 4), "copy_in") ||
                !check(hspmn_decoder_append(dec_, slots, tok, logits, nullptr), "hspmn_decoder_append (step)") ||
                !argmax(logits, n, next))
                return false;
            secs->push_back(std::chrono::duration<double>(Clock::now() - t0).count());
        }
        return true;
    }

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
        std::vector<float> v(static_cast<std::size_t>(n) * o_.shape.vocab);
        if (!check(hspmn_tensor_copy_out(logits, v.data(), static_cast<int64_t>(v.size()) * 4), "copy_out"))
            return false;
        next->resize(static_cast<std::size_t>(n));
        for (int j = 0; j < n; ++j) {
            const float* r = v.data() + static_cast<std::size_t>(j) * o_.shape.vocab;
            (*next)[j] = static_cast<int32_t>(std::max_element(r, r + o_.shape.vocab) - r);
        }
        return true;
    }

    hspmn_context* ctx_;
    const Options& o_;
    int L_;
    hspmn_model* model_ = nullptr;
    hspmn_decoder* dec_ = nullptr;
    hspmn_tensor* b_ = nullptr;
    std::string routing_;
    std::vector<double> calib_;
    int captured_ = 0;
    std::vector<hspmn_tensor*> made_;
    std::mt19937 rng_{7};
};

bool timed_steps(Bench& b, const Options& o, const std::string& path, int n, std::vector<int32_t>* next,
                 double* med, double* mean) {
    std::vector<double> secs;
    if (!b.steps(path, n, o.warmup + o.steps, next, &secs)) return false;
    std::vector<double> timed(secs.begin() + o.warmup, secs.end());
    *mean = 0;
    for (double s : timed) *mean += s / static_cast<double>(timed.size());
    *med = median(timed);
    return true;
}

// Every measurement of one model (layers L); false on the first failure. Paths the backend cannot
// take (graphs on the CPU) are skipped with a line saying so.
bool run_model(hspmn_context* ctx, const Options& o, int L, bool cuda, std::vector<Row>* rows) {
    Bench b(ctx, o, L);
    if (!b.create()) return false;
    const int64_t extra = o.warmup + o.steps + 1;
    int64_t max_ctx = o.prompt;
    for (int64_t c : o.contexts) max_ctx = std::max(max_ctx, c);
    std::vector<std::string> paths;
    for (const std::string& p : o.paths) {
        if (p == "graph" && !cuda) std::printf("  (path graph skipped: graphs need the CUDA backend)\n");
        else paths.push_back(p);
    }
    std::vector<int32_t> next;
    for (const std::string& routing : o.routings) {
        if (!b.set_routing(routing)) return false;
        // One sequence: decode latency at each cache length by each path, then the long prompt's TTFT.
        if (!b.open_decoder(1, max_ctx + extra * static_cast<int64_t>(paths.size()))) return false;
        for (int64_t c : o.contexts) {
            double frac = -1;
            if (b.prefill(1, c, &next, &frac) < 0) return false;
            if (routing != "calibrated" && frac != (routing == "all" ? 1.0 : 0.0)) {
                std::fprintf(stderr, "hspmn_decode_bench: the router pin (%s) did not hold: %.4f routed\n",
                             routing.c_str(), frac);
                return false;
            }
            // The paths decode one after another from the same cache: each adds warmup + steps tokens.
            for (const std::string& path : paths) {
                double med = 0, mean = 0;
                if (!timed_steps(b, o, path, 1, &next, &med, &mean)) return false;
                rows->push_back({"decode", path, routing, L, c, 1, med * 1e3, mean * 1e3, 1.0 / med, frac});
                std::printf("  L=%-3d %-10s %-6s decode  cache %-7lld  %8.3f ms/token (mean %.3f; prefill routed %.3f)\n",
                            L, routing.c_str(), path.c_str(), static_cast<long long>(c), med * 1e3, mean * 1e3, frac);
            }
        }
        // A first prefill of this shape sizes the scratch and plans: warm it up, then time a fresh slot.
        if (b.prefill(1, std::min(o.prompt, o.prefill_chunk), &next) < 0) return false;
        double frac = -1;
        const double ttft = b.prefill(1, o.prompt, &next, routing == "calibrated" ? &frac : nullptr);
        if (ttft < 0) return false;
        rows->push_back({"ttft", "prefill", routing, L, o.prompt, 1, ttft * 1e3, ttft * 1e3, o.prompt / ttft, frac});
        std::printf("  L=%-3d %-10s ttft    prompt %-6lld  %8.1f ms (%.0f prompt tok/s, chunks of %lld rows)\n", L,
                    routing.c_str(), static_cast<long long>(o.prompt), ttft * 1e3, o.prompt / ttft,
                    static_cast<long long>(std::min(o.prompt, o.prefill_chunk)));
        // Many slots: one token each per call.
        const int n = o.batch_slots;
        if (!b.open_decoder(n, o.batch_context + extra * static_cast<int64_t>(paths.size()))) return false;
        if (b.prefill(n, o.batch_context, &next) < 0) return false;
        for (const std::string& path : paths) {
            if (path == "graph" && n > 32) {
                std::printf("  (batched graph skipped: %d slots > 32)\n", n);
                continue;
            }
            double med = 0, mean = 0;
            if (!timed_steps(b, o, path, n, &next, &med, &mean)) return false;
            rows->push_back({"batched", path, routing, L, o.batch_context, n, med * 1e3, mean * 1e3, n / med, -1});
            std::printf("  L=%-3d %-10s %-6s batched %d slots, cache %-6lld  %8.3f ms/step  %.0f tok/s\n", L,
                        routing.c_str(), path.c_str(), n, static_cast<long long>(o.batch_context), med * 1e3, n / med);
        }
    }
    return true;
}

const Row* find(const std::vector<Row>& rows, const char* kind, const std::string& path, const std::string& routing,
                int L, int64_t c) {
    for (const Row& r : rows)
        if (r.kind == kind && r.path == path && r.routing == routing && r.layers == L && r.context == c) return &r;
    return nullptr;
}

// The fraction of tokens a routing setting routes: pinned (all, none), or rho once calibrated.
double assumed_routed(const Options& o, const std::string& routing) {
    return routing == "all" ? 1.0 : routing == "none" ? 0.0 : o.rho;
}

// Bytes one B=1 step must read: every weight it uses (Q and O and the cache's K/V only when routed),
// the tied head included.
double step_bytes(const Options& o, int L, int64_t cache, double routed) {
    const double D = o.shape.dim, F = o.shape.ffn(), KV = o.shape.kv_dim();
    const double always = 3 * D * F + 2 * D * KV + 4 * D + 2 + D * 4;  // gate/up/down, K/V, norms/router, conv
    const double routed_bytes = 2 * D * D + 2.0 * static_cast<double>(cache) * KV;  // Q, O; the cache's K and V
    return (L * (always + routed * routed_bytes) + static_cast<double>(o.shape.vocab) * D + D) * 2.0;
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
    const int64_t KV = static_cast<int64_t>(o.shape.dim) / o.shape.heads * o.shape.kv_heads;
    const int64_t conv_kernel = hspmn_block_default_params().conv_kernel;  // Bench::create keeps the default
    return o.shape.layers * (2 * max_len * KV + (conv_kernel - 1) * o.shape.dim) * elem;
}

// One prefill call's scratch, an estimate: the rows pass per row (CudaBlock::chunk_row_bytes at the
// default conv kernel and mlp ratio) plus the decoder's own [T, D] buffers and routed flags.
int64_t long_scratch_bytes(const Options& o, int64_t T) {
    const ModelShape& m = o.shape;
    const int64_t D = m.dim, F = m.dim * m.mlp_ratio, Dh = m.dim / m.heads, KV = Dh * m.kv_heads;
    const int64_t per_row = 8 + 8 * D + 6 * F + 4 * D + 4 * std::max(KV, D) + 4 * KV + 4 * m.heads + 4 * Dh + 28;
    return T * (per_row + 3 * 2 * D + 4 * m.layers + 4);
}

void print_gb(const char* what, int64_t bytes) {
    std::printf("  %-34s %16lld bytes  %8.2f GB  %8.2f GiB\n", what, static_cast<long long>(bytes), bytes / 1e9,
                bytes / static_cast<double>(int64_t{1} << 30));
}

int run_long_prompt(hspmn_context* ctx, const Options& o, int32_t backend) {
    const int64_t prompt = o.long_prompt, steps = o.long_decode, max_len = prompt + steps;
    const int64_t T = std::min(prompt, o.prefill_chunk);
    const int64_t elem = backend == HSPMN_BACKEND_CUDA ? 2 : 4;
    const char* prefill_pin = o.long_prefill_all ? "all" : "none";
    const char* decode_pin = o.long_decode_all ? "all" : "none";
    std::printf("long prompt  backend %s  layers %d %s  prompt %lld (chunks of %lld)  decode %lld  routed: prefill %s, "
                "decode %s\n",
                backend_name(backend), o.shape.layers, o.shape.describe().c_str(), static_cast<long long>(prompt),
                static_cast<long long>(T), static_cast<long long>(steps), prefill_pin, decode_pin);
    LongResult r;
    hspmn_alloc_stats st;
    hspmn_alloc_stats_get(&st);
    const int64_t live0 = st.live_bytes;
    hspmn_alloc_stats_reset_peak();
    Bench b(ctx, o, o.shape.layers);
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
    if (!b.set_routing(prefill_pin)) return 1;
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
    if (!b.set_routing(decode_pin)) return 1;
    std::vector<double> secs;
    // the decode step path (graphs on CUDA, sampling on the device), as a server decodes
    if (!b.steps(backend == HSPMN_BACKEND_CUDA ? "graph" : "step", 1, static_cast<int>(steps), &next, &secs)) return 1;
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
    if (!write_json(kTool, o.json, "long_prompt", backend, o.shape,
                    "\"prompt\": %lld, \"decode\": %lld, \"prefill_chunk\": %lld, \"prefill_routed\": \"%s\", "
                    "\"decode_routed\": \"%s\", "
                    "\"model_bytes\": %lld, \"cache_bytes\": %lld, \"scratch_bytes_estimate\": %lld, "
                    "\"peak_bytes\": %lld, \"ttft_s\": %.4f, \"decode_ms_median\": %.4f, \"decode_ms_mean\": %.4f, "
                    "\"decode_ms_first\": %.4f}\n",
                    static_cast<long long>(prompt), static_cast<long long>(steps), static_cast<long long>(T),
                    prefill_pin, decode_pin,
                    static_cast<long long>(r.model_bytes), static_cast<long long>(r.cache_bytes),
                    static_cast<long long>(r.scratch_bytes), static_cast<long long>(r.peak_bytes), r.ttft_s,
                    r.decode_ms_median, r.decode_ms_mean, r.decode_ms_first))
        return 1;
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    if (const int rc = options_exit(parse(argc, argv, &o), kTool, usage); rc >= 0) return rc;
    int32_t backend = 0;
    hspmn_context* ctx = open_context(kTool, context_params(o.backend, o.threads), &backend);
    if (!ctx) return 1;
    const bool cuda = backend == HSPMN_BACKEND_CUDA;
    if (o.long_prompt > 0) {
        const int rc = run_long_prompt(ctx, o, backend);
        hspmn_context_destroy(ctx);
        return rc;
    }
    std::printf("decode bench  backend %s  %s  layers 1 and %d  steps %d (+%d warm-up)\n", backend_name(backend),
                o.shape.describe().c_str(), o.shape.layers, o.steps, o.warmup);

    std::vector<Row> rows;
    std::vector<int> models{1};
    if (o.shape.layers != 1) models.push_back(o.shape.layers);
    hspmn_alloc_stats_reset_peak();
    bool ok = true;
    for (int L : models) ok = ok && run_model(ctx, o, L, cuda, &rows);
    hspmn_alloc_stats st;
    hspmn_alloc_stats_get(&st);
    hspmn_context_destroy(ctx);
    if (!ok) return 1;

    std::printf("\n%-6s %-8s %-24s %-10s", "layers", "what", "shape", "unit");
    for (const std::string& r : o.routings)
        for (const std::string& p : o.paths) std::printf(" %16s", (r.substr(0, 5) + "/" + p).c_str());
    std::printf("\n");
    auto line = [&](int L, const char* kind, const std::string& shape, const char* unit, int64_t c, bool per_token) {
        std::printf("%-6d %-8s %-24s %-10s", L, kind, shape.c_str(), unit);
        for (const std::string& r : o.routings)
            for (const std::string& p : o.paths) {
                const Row* w = find(rows, kind, std::string(kind) == "ttft" ? "prefill" : p, r, L, c);
                if (!w) std::printf(" %16s", "-");
                else std::printf(" %16.3f", per_token ? w->ms : w->tokens_per_s);
            }
        std::printf("\n");
    };
    for (int L : models) {
        for (int64_t c : o.contexts) line(L, "decode", "B=1 cache " + std::to_string(c), "ms/token", c, true);
        line(L, "ttft", "prompt " + std::to_string(o.prompt), "ms", o.prompt, true);
        line(L, "batched", std::to_string(o.batch_slots) + " x cache " + std::to_string(o.batch_context), "tok/s",
             o.batch_context, false);
    }
    // The bandwidth floor of the B=1 decode rows and how far each path is from it.
    std::printf("\nfloor: bytes a B=1 step reads / %.0f GB/s\n", o.bandwidth_gbs);
    for (const Row& r : rows) {
        if (r.kind != "decode") continue;
        const double routed = assumed_routed(o, r.routing);
        const double bytes = step_bytes(o, r.layers, r.context, routed);
        const double floor_ms = bytes / (o.bandwidth_gbs * 1e9) * 1e3;
        std::printf("  L=%-3d %-10s %-6s cache %-7lld %6.3f GB  floor %7.3f ms  measured %7.3f ms  floor/measured %5.1f%%\n",
                    r.layers, r.routing.c_str(), r.path.c_str(), static_cast<long long>(r.context), bytes / 1e9,
                    floor_ms, r.ms, 100.0 * floor_ms / r.ms);
    }
    std::printf("peak memory %.2f GB\n", st.peak_bytes / 1e9);

    if (!o.json.empty()) {
        FILE* f = begin_json(kTool, o.json, "decode", backend, o.shape);
        if (!f) return 1;
        std::fprintf(f,
                     "\"steps\": %d, \"warmup\": %d, \"prefill_chunk\": %lld, \"rho\": %.3f, \"bandwidth_gbs\": %.0f, "
                     "\"peak_bytes\": %lld, \"results\": [",
                     o.steps, o.warmup, static_cast<long long>(o.prefill_chunk), o.rho, o.bandwidth_gbs,
                     static_cast<long long>(st.peak_bytes));
        for (std::size_t i = 0; i < rows.size(); ++i) {
            const Row& w = rows[i];
            const double routed = assumed_routed(o, w.routing);
            std::fprintf(f,
                         "%s\n  {\"kind\": \"%s\", \"path\": \"%s\", \"routing\": \"%s\", \"layers\": %d, "
                         "\"context\": %lld, \"slots\": %d, \"ms\": %.4f, \"ms_mean\": %.4f, \"tokens_per_s\": %.1f, "
                         "\"prefill_routed_fraction\": %.4f, \"floor_ms\": %.4f}",
                         i ? "," : "", w.kind.c_str(), w.path.c_str(), w.routing.c_str(), w.layers,
                         static_cast<long long>(w.context), w.slots, w.ms, w.ms_mean, w.tokens_per_s,
                         w.routed_fraction,
                         w.kind == "decode" ? step_bytes(o, w.layers, w.context, routed) / (o.bandwidth_gbs * 1e6)
                                            : 0.0);
        }
        std::fprintf(f, "\n]}\n");
        if (!close_json(kTool, f, o.json)) return 1;
    }
    return 0;
}
