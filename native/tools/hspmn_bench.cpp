// hspmn_bench: times HSPMN blocks through the public C ABI (hspmn.h) in the benchmark modes of the
// CUDA issue. Same conventions and JSON fields as native/bench/hspmn_block.py, so results compare;
// io.hspmn.bench.Bench is the same command on the Java API. Usage: hspmn_bench --help.
#include <algorithm>
#include <chrono>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "hspmn.h"
#include "tool_common.h"

namespace {

const char* const kTool = "hspmn_bench";

using hspmn_tool::backend_name;
using hspmn_tool::json_string;
using hspmn_tool::parse_int;

const char* const kUsage =
    "usage: hspmn_bench [options]\n"
    "  --mode throughput|longctx|train|stress|all   (throughput)\n"
    "  --backend auto|cpu|cuda                      (auto)\n"
    "  --small        CPU-sized defaults: B=2 S=512 D=256 H=4 Hkv=2, long-seq 2048,4096,\n"
    "                 stress-start 1024, max-seq 16384 (explicit options still win)\n"
    "  --batch 64 --seq 4096 --dim 2048 --heads 16 --kv-heads 4 --mlp-ratio 4\n"
    "  --rho 0.2 --routing topk|threshold --iters 10 --warmup 2 --threads 0 --seed 1\n"
    "  --long-seq 65536,131072   longctx sequence lengths (B=1)\n"
    "  --stress-start 65536      stress: first S at B=1, doubled until out of memory, the kernels' int32\n"
    "                            indexing (HSPMN_ERR_SHAPE) ...\n"
    "  --max-seq 4194304         ... or until the next S would pass this cap\n"
    "  --stress-iters 1          stress: timed calls per S, after at most one warm-up (the peak is the point,\n"
    "                            and a forward at S = 2M takes seconds)\n"
    "  --graph                   CUDA: after each inference config, the same forward captured once as a\n"
    "                            CUDA graph (hspmn_graph_capture_forward) and timed per replay\n"
    "  --json FILE               write the results as JSON\n"
    "Each time is the median of --iters calls, each closed by hspmn_context_synchronize, after\n"
    "--warmup calls; peak is hspmn_alloc_stats' peak of library-held bytes during the block's life.\n";

// A failed hspmn call, carried up to the configuration that made it (never out of main).
struct Failure {
    hspmn_status status;
    std::string message;
};

void check(hspmn_status s, const char* what) {
    if (s == HSPMN_OK) return;
    const std::string msg = hspmn_last_error();
    const std::string prefix = msg.rfind(what, 0) == 0 ? "" : std::string(what) + ": ";  // messages often name it
    throw Failure{s, prefix + hspmn_status_name(s) + ": " + msg};
}

struct ContextDel {
    void operator()(hspmn_context* c) const { hspmn_context_destroy(c); }
};
struct TensorDel {
    void operator()(hspmn_tensor* t) const { hspmn_tensor_destroy(t); }
};
struct BlockDel {
    void operator()(hspmn_block* b) const { hspmn_block_destroy(b); }
};
using ContextPtr = std::unique_ptr<hspmn_context, ContextDel>;
using TensorPtr = std::unique_ptr<hspmn_tensor, TensorDel>;
using BlockPtr = std::unique_ptr<hspmn_block, BlockDel>;
struct GraphDel {
    void operator()(hspmn_graph* g) const { hspmn_graph_destroy(g); }
};
using GraphPtr = std::unique_ptr<hspmn_graph, GraphDel>;

struct Options {
    std::string mode = "throughput";
    int32_t backend = HSPMN_BACKEND_AUTO;
    int64_t batch = 64, seq = 4096;
    int32_t dim = 2048, heads = 16, kv_heads = 4, mlp_ratio = 4, threads = 0;
    float rho = 0.2f;
    int32_t routing = HSPMN_ROUTING_TOPK;
    int iters = 10, warmup = 2;
    uint64_t seed = 1;
    std::vector<int64_t> long_seq = {65536, 131072};
    int64_t stress_start = 65536, max_seq = int64_t{1} << 22;
    int stress_iters = 1;
    std::string json;
    bool small = false;
    bool graph = false;
};

struct Config {
    std::string name;
    int64_t B, S;
    bool train;
    bool graph = false;  // inference replayed from a CUDA graph captured once
    int warmup = -1, iters = -1;  // >= 0: instead of --warmup / --iters (stress)
};

struct Result {
    Config cfg;
    double ms = 0, tok_s = 0, peak_gib = 0;
    bool ok = false;
    hspmn_status status = HSPMN_OK;
    std::string error;
};

// ---- input data ---------------------------------------------------------------------------------

// The same generator as io.hspmn.bench.Bench: splitmix64 words, each giving four 16-bit uniforms
// whose centred sum (unit variance) is rounded to bf16. The period is prime so that rows of D
// values never repeat (repeated tokens would tie the router scores).
constexpr int64_t kPatternPeriod = 1048573;

std::vector<uint16_t> bf16_pattern(uint64_t seed) {
    std::vector<uint16_t> p(static_cast<size_t>(kPatternPeriod));
    uint64_t state = seed;
    for (auto& v : p) {
        state += 0x9E3779B97F4A7C15ull;
        uint64_t z = state;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        float sum = 0.0f;
        for (int k = 0; k < 4; ++k) sum += (static_cast<float>((z >> (16 * k)) & 0xFFFF) + 0.5f) / 65536.0f;
        float f = (sum - 2.0f) * 1.7320508f;
        uint32_t u;
        std::memcpy(&u, &f, 4);
        uint16_t b = static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
        v = (b & 0x7FFF) == 0 ? uint16_t{0x3F80} : b;  // never zero: zeros would flatter the timing
    }
    return p;
}

void fill_tiled(uint16_t* dst, int64_t n, const std::vector<uint16_t>& pat) {
    for (int64_t i = 0; i < n; i += kPatternPeriod) {
        int64_t len = std::min(kPatternPeriod, n - i);
        std::memcpy(dst + i, pat.data(), static_cast<size_t>(len) * 2);
    }
}

// Host tensors are filled in place; device tensors through one host copy (not library memory).
void fill_bf16(hspmn_tensor* t, const std::vector<uint16_t>& pat) {
    hspmn_tensor_desc d;
    check(hspmn_tensor_describe(t, &d), "hspmn_tensor_describe");
    if (d.memory == HSPMN_MEMORY_DEVICE) {
        std::vector<uint16_t> host(static_cast<size_t>(d.numel));
        fill_tiled(host.data(), d.numel, pat);
        check(hspmn_tensor_copy_in(t, host.data(), d.nbytes), "hspmn_tensor_copy_in");
    } else {
        void* p = nullptr;
        check(hspmn_tensor_data(t, &p), "hspmn_tensor_data");
        fill_tiled(static_cast<uint16_t*>(p), d.numel, pat);
    }
}

// ---- one configuration --------------------------------------------------------------------------

ContextPtr make_context(const Options& o) {
    const hspmn_context_params cp = hspmn_tool::context_params(o.backend, o.threads);
    hspmn_context* c = nullptr;
    check(hspmn_context_create(&cp, &c), "hspmn_context_create");
    return ContextPtr(c);
}

hspmn_block_params block_params(const Options& o) {
    hspmn_block_params bp = hspmn_block_default_params();
    bp.dim = o.dim;
    bp.num_heads = o.heads;
    bp.num_kv_heads = o.kv_heads;
    bp.mlp_ratio = o.mlp_ratio;
    bp.routing = o.routing;
    bp.sparsity_k = o.rho;
    return bp;
}

TensorPtr make_tensor(hspmn_context* ctx, int32_t dtype, int32_t memory, std::vector<int64_t> shape) {
    hspmn_tensor* t = nullptr;
    check(hspmn_tensor_create(ctx, dtype, memory, static_cast<int32_t>(shape.size()), shape.data(), &t),
          "hspmn_tensor_create");
    return TensorPtr(t);
}

double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// A fresh context per configuration, so each peak holds its own caches and nothing of the last one.
Result run_config(const Options& o, const Config& c, const std::vector<uint16_t>& pat_x,
                  const std::vector<uint16_t>& pat_dy) {
    Result r;
    r.cfg = c;
    try {
        ContextPtr ctx = make_context(o);
        int32_t backend = HSPMN_BACKEND_CPU;
        check(hspmn_context_backend(ctx.get(), &backend), "hspmn_context_backend");
        const int32_t mem = backend == HSPMN_BACKEND_CUDA ? HSPMN_MEMORY_DEVICE : HSPMN_MEMORY_HOST;
        const std::vector<int64_t> bsd = {c.B, c.S, o.dim};
        TensorPtr x = make_tensor(ctx.get(), HSPMN_DTYPE_BF16, mem, bsd);  // x: [B, S, D] bf16
        fill_bf16(x.get(), pat_x);
        TensorPtr d_out;  // d_out: [B, S, D] bf16
        if (c.train) {
            d_out = make_tensor(ctx.get(), HSPMN_DTYPE_BF16, mem, bsd);
            fill_bf16(d_out.get(), pat_dy);
        }
        check(hspmn_context_synchronize(ctx.get()), "hspmn_context_synchronize");
        // From here on, as in hspmn_block.py: the block, its outputs, caches and scratch, with x live.
        check(hspmn_alloc_stats_reset_peak(), "hspmn_alloc_stats_reset_peak");
        const hspmn_block_params bp = block_params(o);
        hspmn_block* bh = nullptr;
        check(hspmn_block_create(ctx.get(), &bp, o.seed, &bh), "hspmn_block_create");
        BlockPtr block(bh);
        TensorPtr out = make_tensor(ctx.get(), HSPMN_DTYPE_BF16, mem, bsd);  // out: [B, S, D] bf16
        TensorPtr d_x, aux;
        hspmn_forward_params fp = hspmn_forward_default_params();
        fp.seed = o.seed;
        const hspmn_backward_params bw = hspmn_backward_default_params();
        std::function<void()> step;
        GraphPtr graph;  // declared after the tensors and the block: destroyed before them
        if (c.graph) {
            fp.training = 0;
            hspmn_graph* g = nullptr;
            // The capture runs the forward once (sizing the scratch) and records the next run.
            check(hspmn_graph_capture_forward(block.get(), &fp, x.get(), out.get(), nullptr, &g),
                  "hspmn_graph_capture_forward");
            graph.reset(g);
            step = [&] { check(hspmn_graph_launch(graph.get()), "hspmn_graph_launch"); };
        } else if (c.train) {
            d_x = make_tensor(ctx.get(), HSPMN_DTYPE_BF16, mem, bsd);  // d_x: [B, S, D] bf16
            aux = make_tensor(ctx.get(), HSPMN_DTYPE_F32, mem, {1});   // aux: [1] f32
            fp.training = 1;
            step = [&] {
                check(hspmn_block_forward(block.get(), &fp, x.get(), out.get(), aux.get()), "hspmn_block_forward");
                check(hspmn_block_backward(block.get(), &bw, d_out.get(), nullptr, d_x.get()), "hspmn_block_backward");
            };
        } else {
            fp.training = 0;
            step = [&] {
                check(hspmn_block_forward(block.get(), &fp, x.get(), out.get(), nullptr), "hspmn_block_forward");
            };
        }
        const int warmup = c.warmup >= 0 ? c.warmup : o.warmup, iters = c.iters >= 0 ? c.iters : o.iters;
        for (int i = 0; i < warmup; ++i) step();
        check(hspmn_context_synchronize(ctx.get()), "hspmn_context_synchronize");
        std::vector<double> ts;
        for (int i = 0; i < iters; ++i) {
            const double t0 = now_ms();
            step();
            check(hspmn_context_synchronize(ctx.get()), "hspmn_context_synchronize");
            ts.push_back(now_ms() - t0);
        }
        std::sort(ts.begin(), ts.end());
        hspmn_alloc_stats st;
        check(hspmn_alloc_stats_get(&st), "hspmn_alloc_stats_get");
        r.ms = ts[ts.size() / 2];
        r.tok_s = static_cast<double>(c.B * c.S) / (r.ms / 1e3);
        r.peak_gib = static_cast<double>(st.peak_bytes) / static_cast<double>(int64_t{1} << 30);
        r.ok = true;
    } catch (const Failure& f) {
        r.status = f.status;
        r.error = f.message;
    } catch (const std::bad_alloc&) {
        r.status = HSPMN_ERR_OUT_OF_MEMORY;
        r.error = "host memory for the input data: std::bad_alloc";
    }
    return r;
}

// ---- output -------------------------------------------------------------------------------------

void print_line(const Result& r) {
    if (r.ok) {
        std::printf("%-24s B=%3lld S=%7lld  %12.0f tok/s  %10.2f ms  peak %8.3f GiB\n", r.cfg.name.c_str(),
                    static_cast<long long>(r.cfg.B), static_cast<long long>(r.cfg.S), r.tok_s, r.ms, r.peak_gib);
    } else {
        std::printf("%-24s B=%3lld S=%7lld  failed: %s\n", r.cfg.name.c_str(), static_cast<long long>(r.cfg.B),
                    static_cast<long long>(r.cfg.S), r.error.c_str());
    }
    std::fflush(stdout);
}

struct Stress {
    bool ran = false;
    int64_t max_s = 0;
    double peak_gib = 0;
    std::string stopped_by, message;
};

// f: opened before the first run, so an unwritable path fails in a second, not after the runs.
bool write_json(FILE* f, const Options& o, const std::string& backend, const std::vector<Result>& rs,
                const Stress& st) {
    std::fprintf(f, "{\n \"runtime\": \"native\",\n \"version\": %s,\n \"backend\": %s,\n",
                 json_string(hspmn_version_string()).c_str(), json_string(backend).c_str());
    std::fprintf(f,
                 " \"config\": {\"D\": %d, \"H\": %d, \"Hkv\": %d, \"mlp_ratio\": %d, \"rho\": %.7g, "
                 "\"routing\": \"%s\", \"iters\": %d, \"warmup\": %d, \"threads\": %d},\n \"results\": [",
                 o.dim, o.heads, o.kv_heads, o.mlp_ratio, static_cast<double>(o.rho),
                 o.routing == HSPMN_ROUTING_TOPK ? "topk" : "threshold", o.iters, o.warmup, o.threads);
    for (size_t i = 0; i < rs.size(); ++i) {
        const Result& r = rs[i];
        std::fprintf(f, "%s\n  {\"name\": %s, \"B\": %lld, \"S\": %lld, \"train\": %s", i ? "," : "",
                     json_string(r.cfg.name).c_str(), static_cast<long long>(r.cfg.B),
                     static_cast<long long>(r.cfg.S), r.cfg.train ? "true" : "false");
        if (r.cfg.graph) std::fprintf(f, ", \"graph\": true");
        if (r.ok) {
            std::fprintf(f, ", \"rho\": %.7g, \"ms\": %.6g, \"tok_s\": %.9g, \"peak_gib\": %.6g}",
                         static_cast<double>(o.rho), r.ms, r.tok_s, r.peak_gib);
        } else {
            std::fprintf(f, ", \"status\": %s, \"error\": %s}", json_string(hspmn_status_name(r.status)).c_str(),
                         json_string(r.error).c_str());
        }
    }
    std::fprintf(f, "\n ]");
    if (st.ran) {
        std::fprintf(f, ",\n \"stress\": {\"max_S\": %lld, \"peak_gib\": %.6g, \"stopped_by\": %s, \"message\": %s}",
                     static_cast<long long>(st.max_s), st.peak_gib, json_string(st.stopped_by).c_str(),
                     json_string(st.message).c_str());
    }
    std::fprintf(f, "\n}\n");
    return hspmn_tool::close_json(kTool, f, o.json);
}

// ---- options ------------------------------------------------------------------------------------

// Returns "" or the reason the options are unusable.
std::string parse_options(int argc, char** argv, Options* o, bool* help) {
    std::map<std::string, std::string> v;
    bool small = false;
    static const char* const kTakesValue[] = {"mode", "backend", "batch", "seq", "dim", "heads", "kv-heads",
                                              "mlp-ratio", "rho", "routing", "iters", "warmup", "threads",
                                              "seed", "long-seq", "stress-start", "max-seq", "stress-iters",
                                              "json"};
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            *help = true;
            return "";
        }
        if (a == "--small") {
            small = true;
            continue;
        }
        if (a == "--graph") {
            o->graph = true;
            continue;
        }
        if (a.rfind("--", 0) != 0) return "unexpected argument '" + a + "'";
        std::string key = a.substr(2), val;
        const size_t eq = key.find('=');
        if (eq != std::string::npos) {
            val = key.substr(eq + 1);
            key = key.substr(0, eq);
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            return "option --" + key + " needs a value";
        }
        if (std::find(std::begin(kTakesValue), std::end(kTakesValue), key) == std::end(kTakesValue))
            return "unknown option --" + key;
        v[key] = val;
    }
    o->small = small;
    if (small) {
        o->batch = 2;
        o->seq = 512;
        o->dim = 256;
        o->heads = 4;
        o->kv_heads = 2;
        o->long_seq = {2048, 4096};
        o->stress_start = 1024;
        o->max_seq = 16384;
    }
    const int64_t kI32 = INT32_MAX, kSeq = int64_t{1} << 40;
    struct IntOpt {
        const char* name;
        int64_t lo, hi;
        std::function<void(int64_t)> set;
    };
    const IntOpt ints[] = {
        {"batch", 1, kI32, [&](int64_t x) { o->batch = x; }},
        {"seq", 1, kSeq, [&](int64_t x) { o->seq = x; }},
        {"dim", 1, kI32, [&](int64_t x) { o->dim = static_cast<int32_t>(x); }},
        {"heads", 1, kI32, [&](int64_t x) { o->heads = static_cast<int32_t>(x); }},
        {"kv-heads", 1, kI32, [&](int64_t x) { o->kv_heads = static_cast<int32_t>(x); }},
        {"mlp-ratio", 1, kI32, [&](int64_t x) { o->mlp_ratio = static_cast<int32_t>(x); }},
        {"iters", 1, 1000000, [&](int64_t x) { o->iters = static_cast<int>(x); }},
        {"warmup", 0, 1000000, [&](int64_t x) { o->warmup = static_cast<int>(x); }},
        {"threads", 0, 4096, [&](int64_t x) { o->threads = static_cast<int32_t>(x); }},
        {"seed", 0, INT64_MAX, [&](int64_t x) { o->seed = static_cast<uint64_t>(x); }},
        {"stress-start", 1, kSeq, [&](int64_t x) { o->stress_start = x; }},
        {"max-seq", 1, kSeq, [&](int64_t x) { o->max_seq = x; }},
        {"stress-iters", 1, 1000000, [&](int64_t x) { o->stress_iters = static_cast<int>(x); }},
    };
    for (const IntOpt& io : ints) {
        auto it = v.find(io.name);
        if (it == v.end()) continue;
        int64_t x;
        if (!parse_int(it->second, io.lo, io.hi, &x))
            return "--" + std::string(io.name) + " must be an integer in [" + std::to_string(io.lo) + ", " +
                   std::to_string(io.hi) + "], got '" + it->second + "'";
        io.set(x);
    }
    if (v.count("mode")) {
        o->mode = v["mode"];
        if (o->mode != "throughput" && o->mode != "longctx" && o->mode != "train" && o->mode != "stress" &&
            o->mode != "all")
            return "--mode must be throughput, longctx, train, stress or all, got '" + o->mode + "'";
    }
    if (v.count("backend")) {
        const std::string& b = v["backend"];
        if (!hspmn_tool::parse_backend(b, &o->backend)) return "--backend must be auto, cpu or cuda, got '" + b + "'";
    }
    if (v.count("routing")) {
        const std::string& r = v["routing"];
        if (r == "topk") o->routing = HSPMN_ROUTING_TOPK;
        else if (r == "threshold") o->routing = HSPMN_ROUTING_THRESHOLD;
        else return "--routing must be topk or threshold, got '" + r + "'";
    }
    if (v.count("rho")) {
        char* end = nullptr;
        const std::string& s = v["rho"];
        double r = std::strtod(s.c_str(), &end);
        if (s.empty() || *end || !(r > 0.0 && r <= 1.0)) return "--rho must be a number in (0, 1], got '" + s + "'";
        o->rho = static_cast<float>(r);
    }
    if (v.count("long-seq")) {
        o->long_seq.clear();
        for (const std::string& item : hspmn_tool::split_list(v["long-seq"])) {
            int64_t x;
            if (!parse_int(item, 1, kSeq, &x))
                return "--long-seq must be a comma-separated list of positive integers, got '" + v["long-seq"] + "'";
            o->long_seq.push_back(x);
        }
    }
    if (v.count("json")) o->json = v["json"];
    if (o->stress_start > o->max_seq) o->stress_start = o->max_seq;  // the cap wins: one stress step
    return "";
}

int run(int argc, char** argv) {
    Options o;
    bool help = false;
    const std::string bad = parse_options(argc, argv, &o, &help);
    if (help) {
        std::fputs(kUsage, stdout);
        return 0;
    }
    if (!bad.empty()) {
        std::fprintf(stderr, "error: %s (hspmn_bench --help lists the options)\n", bad.c_str());
        return 1;
    }
    const hspmn_block_params bp = block_params(o);
    if (hspmn_block_params_validate(&bp) != HSPMN_OK) {
        std::fprintf(stderr, "error: block configuration: %s\n", hspmn_last_error());
        return 1;
    }
    // One context up front: a backend that is not built or has no device is one message, not N.
    std::string backend;
    {
        int32_t b = HSPMN_BACKEND_CPU;
        hspmn_context* c = hspmn_tool::open_context(kTool, hspmn_tool::context_params(o.backend, o.threads), &b);
        if (!c) return 1;
        hspmn_context_destroy(c);
        backend = backend_name(b);
    }
    std::printf("hspmn %s, backend %s (asked %s); D=%d H=%d Hkv=%d F=%d rho=%g %s; median of %d after %d warm-up\n",
                hspmn_version_string(), backend.c_str(), backend_name(o.backend), o.dim, o.heads, o.kv_heads,
                o.mlp_ratio * o.dim, static_cast<double>(o.rho),
                o.routing == HSPMN_ROUTING_TOPK ? "topk" : "threshold", o.iters, o.warmup);

    if (o.graph && backend != "cuda") {
        std::fprintf(stderr, "error: --graph needs the CUDA backend (this run resolved to %s)\n", backend.c_str());
        return 1;
    }
    if (backend == "cpu" && !o.small)
        std::fprintf(stderr, "note: the CPU backend at the GPU sizes takes very long; --small gives CPU sizes\n");
    std::vector<uint16_t> pat_x, pat_dy;
    try {
        pat_x = bf16_pattern(o.seed);
        pat_dy = bf16_pattern(o.seed + 0x5EED);
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "error: out of host memory for the input pattern\n");
        return 1;
    }
    FILE* json = nullptr;
    if (!o.json.empty() && !(json = hspmn_tool::open_json(kTool, o.json))) return 1;
    const bool all = o.mode == "all";
    std::vector<Config> cfgs;
    // With --graph each inference config is followed by its graph twin (same B, S, same block seed).
    auto inference = [&](const std::string& name, int64_t B, int64_t S) {
        cfgs.push_back({name, B, S, false});
        if (o.graph) cfgs.push_back({name + " graph", B, S, false, true});
    };
    if (all || o.mode == "throughput") inference("hspmn throughput", o.batch, o.seq);
    if (all || o.mode == "longctx")
        for (int64_t s : o.long_seq) inference("hspmn longctx", 1, s);
    if (all || o.mode == "train") cfgs.push_back({"hspmn train", o.batch, o.seq, true});

    std::vector<Result> results;
    bool failed = false;
    for (const Config& c : cfgs) {
        results.push_back(run_config(o, c, pat_x, pat_dy));
        print_line(results.back());
        failed |= !results.back().ok;
    }
    Stress st;
    if (all || o.mode == "stress") {
        // B=1, S doubling: an inference forward of more rows than one chunk runs in chunks
        // (native/README.md "Memory of a long forward"), so the peak grows by x, out (made by the
        // library, counted: 2 * S * D * 2 bytes) and K/V of the sequence (4 S Hkv*Dh bytes), not by
        // every activation of every token.
        st.ran = true;
        const int64_t million = int64_t{1} << 20;
        for (int64_t s = o.stress_start;; s *= 2) {
            Config c{"hspmn stress", 1, s, false};
            c.warmup = std::min(o.warmup, 1);
            c.iters = o.stress_iters;
            Result r = run_config(o, c, pat_x, pat_dy);
            print_line(r);
            results.push_back(r);
            if (r.ok && s == million)
                std::printf("stress: S=%lld peak library memory %.3f GiB (%.2f GB; x and out, %.2f GB, included)\n",
                            static_cast<long long>(s), r.peak_gib, r.peak_gib * 1.073741824,
                            2.0 * static_cast<double>(s) * o.dim * 2 / 1e9);
            if (!r.ok) {
                // Out of memory is the answer stress looks for, and so is the attention kernels' int32
                // indexing of one sequence (S * Hkv * Dh < 2^31): a limit of the library, not a fault.
                st.stopped_by = r.status == HSPMN_ERR_OUT_OF_MEMORY ? "out_of_memory"
                                : r.status == HSPMN_ERR_SHAPE     ? "shape_limit"
                                                                  : "error";
                st.message = r.error;
                failed |= st.stopped_by == "error" || st.max_s == 0;
                break;
            }
            st.max_s = s;
            st.peak_gib = r.peak_gib;
            if (s > o.max_seq / 2) {
                st.stopped_by = "max_seq";
                st.message = "next S " + std::to_string(2 * s) + " is over --max-seq " + std::to_string(o.max_seq);
                break;
            }
        }
        if (st.max_s > 0)
            std::printf("stress: largest B=1 context that ran: S=%lld, peak %.3f GiB (stopped by %s)\n",
                        static_cast<long long>(st.max_s), st.peak_gib, st.stopped_by.c_str());
        else
            std::printf("stress: nothing ran from S=%lld: %s\n", static_cast<long long>(o.stress_start),
                        st.message.c_str());
    }

    std::printf("\n%-24s %4s %8s %14s %11s %10s\n", "name", "B", "S", "tok/s", "ms", "peak GiB");
    for (const Result& r : results) {
        if (r.ok)
            std::printf("%-24s %4lld %8lld %14.0f %11.2f %10.3f\n", r.cfg.name.c_str(), static_cast<long long>(r.cfg.B),
                        static_cast<long long>(r.cfg.S), r.tok_s, r.ms, r.peak_gib);
        else
            std::printf("%-24s %4lld %8lld %14s %11s %10s  (%s)\n", r.cfg.name.c_str(),
                        static_cast<long long>(r.cfg.B), static_cast<long long>(r.cfg.S), "-", "-", "-",
                        hspmn_status_name(r.status));
    }
    // What a graph saves: the same forward, ordinary vs replayed, both closed by a synchronize.
    for (size_t i = 1; i < results.size(); ++i) {
        const Result& g = results[i];
        const Result& f = results[i - 1];
        if (!g.cfg.graph || !g.ok || !f.ok || f.cfg.graph || f.cfg.B != g.cfg.B || f.cfg.S != g.cfg.S) continue;
        std::printf("graph B=%lld S=%lld: %.3f ms per replay vs %.3f ms per forward (%.3f ms, %.1f%% saved)\n",
                    static_cast<long long>(g.cfg.B), static_cast<long long>(g.cfg.S), g.ms, f.ms, f.ms - g.ms,
                    100.0 * (f.ms - g.ms) / f.ms);
    }
    if (!o.json.empty()) {
        if (!write_json(json, o, backend, results, st)) return 1;
        std::printf("json: %s\n", o.json.c_str());
    }
    return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const Failure& f) {
        std::fprintf(stderr, "error: %s\n", f.message.c_str());
        return 1;
    } catch (const std::exception& e) {  // host memory for the results or the output, not a library call
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
