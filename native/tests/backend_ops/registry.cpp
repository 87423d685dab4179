// The registry: every op of the backend seam with its cases. Shapes include odd tails (sizes that are
// not a multiple of a kernel's vector width, tile or block) and head dims 64 and 128 besides the
// goldens' 8-16. Inputs are drawn from one seeded generator per case and rounded to bf16, so every
// backend reads the same values. Keep the CPU run to seconds: the float64 reference is slower still.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>

#include "../../src/core/bf16.h"
#include "backend_ops.h"

namespace hspmn::backend_ops {

const char* prec_name(Prec p) {
    switch (p) {
        case Prec::EXACT: return "exact";
        case Prec::F32: return "f32";
        case Prec::BF16: return "bf16";
    }
    return "?";
}

int64_t Array::numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
}

int64_t Case::i(const char* key) const { return static_cast<int64_t>(d(key)); }

double Case::d(const char* key) const {
    auto it = p.find(key);
    if (it == p.end()) throw std::runtime_error(name + ": no parameter " + key);
    return it->second;
}

const Array& Case::input(const char* n) const {
    for (const Array& a : in)
        if (a.name == n) return a;
    throw std::runtime_error(name + ": no input " + n);
}

double nmse(const Array& got, const Array& ref) {
    if (got.numel() != ref.numel() || got.is_int != ref.is_int) return INFINITY;
    double num = 0, den = 0;
    for (int64_t k = 0; k < ref.numel(); ++k) {
        const double g = got.is_int ? got.i[k] : got.f[k], r = ref.is_int ? ref.i[k] : ref.f[k];
        num += (g - r) * (g - r);
        den += r * r;
    }
    if (std::isnan(num)) return INFINITY;
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return num / den;
}

namespace {

struct Gen {
    std::mt19937_64 rng;
    explicit Gen(const std::string& name) : rng(std::hash<std::string>{}(name) ^ 0x5eedULL) {}
    // bf16-exact normal values of standard deviation `scale`
    Array normal(const char* name, std::vector<int64_t> shape, float scale = 1.0f) {
        Array a{name, std::move(shape)};
        std::normal_distribution<float> dist(0.0f, scale);
        a.f.resize(static_cast<std::size_t>(a.numel()));
        for (float& x : a.f) x = bf16_to_f32(f32_to_bf16(dist(rng)));
        return a;
    }
    Array ints(const char* name, std::vector<int64_t> shape, std::vector<int32_t> v) {
        Array a{name, std::move(shape), true};
        a.i = std::move(v);
        return a;
    }
    // [B, C] increasing positions in [0, S), counts[b] of them, -1 past counts (the selected-rows layout)
    std::pair<Array, Array> selection(int64_t B, int64_t C, int64_t S, const std::vector<int32_t>& counts,
                                      const char* pos_name = "pos") {
        std::vector<int32_t> pos(static_cast<std::size_t>(B * C), -1);
        for (int64_t b = 0; b < B; ++b) {
            std::vector<int32_t> all(static_cast<std::size_t>(S));
            std::iota(all.begin(), all.end(), 0);
            std::shuffle(all.begin(), all.end(), rng);
            // the last position is always selected when the row has queries: the longest key span
            if (counts[b] > 0) std::swap(*std::find(all.begin(), all.end(), static_cast<int32_t>(S - 1)), all[0]);
            std::sort(all.begin(), all.begin() + counts[b]);
            for (int64_t j = 0; j < counts[b]; ++j) pos[b * C + j] = all[j];
        }
        return {ints(pos_name, {B, C}, pos), ints("counts", {B}, counts)};
    }
};

using Params = std::map<std::string, double>;

Case make(const char* op, const std::string& tag, Params p) {
    Case c;
    c.op = op;
    c.name = std::string(op) + "/" + tag;
    c.p = std::move(p);
    return c;
}

// The single norm, and the pair (a block's two norms of one x): odd D (the CUDA scalar path), odd rows,
// several dw row chunks, D 4096; the pair's backward starts from a nonzero dx (it accumulates,
// attention norm first).
void add_rms_norm(std::vector<Case>& r) {
    using Shapes = std::vector<std::pair<int64_t, int64_t>>;
    for (bool pair : {false, true}) {
        const Shapes shapes = pair ? Shapes{{7, 64}, {33, 131}, {301, 2048}, {65, 4096}}
                                   : Shapes{{7, 64}, {33, 130}, {64, 256}, {5, 1000}};
        for (auto [N, D] : shapes) {
            for (bool backward : {false, true}) {
                const char* op = pair ? (backward ? "rms_norm_pair_backward" : "rms_norm_pair_forward")
                                      : (backward ? "rms_norm_backward" : "rms_norm_forward");
                Case c = make(op, "N" + std::to_string(N) + "_D" + std::to_string(D),
                              {{"N", N}, {"D", D}, {"eps", 1e-5}});
                Gen g(c.name);
                c.in.push_back(g.normal("x", {N, D}));
                for (const char* w : pair ? std::vector<const char*>{"w_h", "w_a"} : std::vector<const char*>{"w"})
                    c.in.push_back(g.normal(w, {D}, 0.5f));
                if (backward)
                    for (const char* dy : pair ? std::vector<const char*>{"dy_a", "dy_h", "dx0"}
                                               : std::vector<const char*>{"dy"})
                        c.in.push_back(g.normal(dy, {N, D}));
                r.push_back(std::move(c));
            }
        }
    }
}

void add_causal_conv(std::vector<Case>& r) {
    // D % 8 == 0 and K <= 8 is the CUDA vector path; D = 36 or K = 9 the scalar one; S odd. The backward's
    // one-pass kernel walks chunks of 16 rows at these N (across sequence ends at S = 13, 50 and 77), D = 520
    // leaves most of a 512-channel block idle, K = 8 and 1 are its widest and narrowest windows.
    struct S4 { int64_t B, S, D, K; };
    for (S4 s : {S4{2, 13, 64, 4}, S4{1, 37, 36, 4}, S4{2, 9, 64, 9}, S4{3, 50, 128, 3}, S4{2, 301, 520, 8},
                 S4{3, 77, 64, 1}}) {
        for (const char* op : {"causal_conv_forward", "causal_conv_backward"}) {
            Case c = make(op, "B" + std::to_string(s.B) + "_S" + std::to_string(s.S) + "_D" + std::to_string(s.D) +
                                  "_K" + std::to_string(s.K),
                          {{"B", s.B}, {"S", s.S}, {"D", s.D}, {"K", s.K}});
            Gen g(c.name);
            c.in.push_back(g.normal("h", {s.B, s.S, s.D}));
            c.in.push_back(g.normal("w", {s.D, s.K}, 0.5f));
            if (std::string(op) == "causal_conv_backward") c.in.push_back(g.normal("dc", {s.B, s.S, s.D}));
            r.push_back(std::move(c));
        }
    }
}

// The fused entry of a whole-sequence pass (the two norms, then the conv of h): sequences shorter than,
// equal to and across the CUDA kernel's 16-row tiles, K 1..8, D 64..4096 (D 4096: two channel groups a
// thread). Only shapes the fused kernel takes (D % 8 == 0, K <= 8): run_rows runs the two ops otherwise.
void add_rms_norm_pair_conv(std::vector<Case>& r) {
    struct S4 { int64_t B, S, D, K; };
    for (S4 s : {S4{2, 37, 64, 3}, S4{1, 16, 128, 4}, S4{3, 5, 64, 8}, S4{2, 50, 256, 1}, S4{1, 33, 2048, 3},
                 S4{2, 18, 4096, 2}}) {
        Case c = make("rms_norm_pair_conv_forward",
                      "B" + std::to_string(s.B) + "_S" + std::to_string(s.S) + "_D" + std::to_string(s.D) + "_K" +
                          std::to_string(s.K),
                      {{"B", s.B}, {"S", s.S}, {"D", s.D}, {"K", s.K}, {"eps", 1e-5}});
        Gen g(c.name);
        c.in.push_back(g.normal("x", {s.B, s.S, s.D}));
        c.in.push_back(g.normal("w_h", {s.D}, 0.5f));
        c.in.push_back(g.normal("w_a", {s.D}, 0.5f));
        c.in.push_back(g.normal("w_c", {s.D, s.K}, 0.5f));
        r.push_back(std::move(c));
    }
}

// A block's output without dropout: m (the down GEMM alone), x and the query rows' o. Odd D (the CUDA scalar
// path), ragged and empty counts, a pass with no query row at all.
void add_residual_out(std::vector<Case>& r) {
    struct S5 { int64_t B, S, C, D; std::vector<int32_t> counts; };
    const std::vector<S5> shapes = {{2, 19, 5, 64, {5, 2}}, {1, 40, 8, 36, {8}}, {3, 33, 4, 256, {4, 0, 3}},
                                    {2, 9, 3, 2048, {0, 0}}};
    for (const S5& s : shapes) {
        Case c = make("residual_out",
                      "B" + std::to_string(s.B) + "_S" + std::to_string(s.S) + "_C" + std::to_string(s.C) + "_D" +
                          std::to_string(s.D),
                      {{"B", s.B}, {"S", s.S}, {"C", s.C}, {"D", s.D}});
        Gen g(c.name);
        c.in.push_back(g.normal("m", {s.B * s.S, s.D}));
        c.in.push_back(g.normal("x", {s.B * s.S, s.D}));
        c.in.push_back(g.normal("o", {s.B * s.C, s.D}));
        auto [idx, counts] = g.selection(s.B, s.C, s.S, s.counts, "indices");
        c.in.push_back(idx);
        c.in.push_back(counts);
        r.push_back(std::move(c));
    }
}

void add_swiglu(std::vector<Case>& r) {
    // cuda_ops runs 8 rows of n / 8 when n allows: 1000 scalar (F 125), 8704 vectorised (F 1088).
    for (int64_t n : {1000, 1003, 4096 * 3 + 5, 8 * 1088}) {
        for (const char* op : {"swiglu_forward", "swiglu_backward"}) {
            Case c = make(op, "n" + std::to_string(n), {{"n", n}});
            Gen g(c.name);
            c.in.push_back(g.normal("g", {n}, 2.0f));
            c.in.push_back(g.normal("u", {n}));
            if (std::string(op) == "swiglu_backward") c.in.push_back(g.normal("da", {n}));
            r.push_back(std::move(c));
        }
    }
}

void add_rope(std::vector<Case>& r) {
    // C == 0: keys, row r of [B*S] at position r % S; else [B, C] selected queries with ragged counts
    struct R5 { int64_t B, S, C, heads, Dh; std::vector<int32_t> counts; };
    const std::vector<R5> shapes = {{2, 19, 0, 2, 64, {}}, {1, 33, 0, 3, 128, {}}, {2, 40, 7, 4, 64, {7, 3}},
                                    {3, 300, 5, 2, 128, {5, 0, 2}}, {1, 11, 0, 2, 8, {}},
                                    {2, 9, 4, 3, 12, {4, 1}}};  // Dh 12: half % 4 != 0, one pair a thread
    for (const R5& s : shapes) {
        for (const char* op : {"rope_forward", "rope_backward"}) {
            const int64_t R = s.C ? s.B * s.C : s.B * s.S;
            Case c = make(op, std::string(s.C ? "queries" : "keys") + "_B" + std::to_string(s.B) + "_S" +
                                  std::to_string(s.S) + "_Dh" + std::to_string(s.Dh),
                          {{"B", s.B}, {"S", s.S}, {"C", s.C}, {"heads", s.heads}, {"Dh", s.Dh}, {"base", 10000.0}});
            Gen g(c.name);
            c.in.push_back(g.normal("x", {R, s.heads * s.Dh}));
            if (s.C) {
                auto [pos, counts] = g.selection(s.B, s.C, s.S, s.counts);
                c.in.push_back(pos);
                c.in.push_back(counts);
            }
            r.push_back(std::move(c));
        }
    }
}

void add_router(std::vector<Case>& r) {
    for (auto [N, D] : std::vector<std::pair<int64_t, int64_t>>{{29, 64}, {64, 130}, {300, 1024}}) {
        Case c = make("router_logits", "N" + std::to_string(N) + "_D" + std::to_string(D), {{"N", N}, {"D", D}});
        Gen g(c.name);
        c.in.push_back(g.normal("x", {N, D}));
        c.in.push_back(g.normal("w", {D}, 0.1f));
        c.in.push_back(g.normal("b", {1}, 0.5f));
        r.push_back(std::move(c));
    }
    struct G { int64_t seed, step, layer, B, S; };
    for (G s : {G{1, 0, 0, 2, 65}, G{0x1234567890abcdLL, 7, 3, 3, 1000}}) {
        Case c = make("gumbel_noise", "B" + std::to_string(s.B) + "_S" + std::to_string(s.S),
                      {{"seed", static_cast<double>(s.seed)}, {"step", s.step}, {"layer", s.layer}, {"B", s.B},
                       {"S", s.S}});
        r.push_back(std::move(c));
    }
}

void add_route_select(std::vector<Case>& r) {
    struct T { const char* tag; int64_t B, S, k; int routing; bool ties; };
    // The long ones are the CUDA wide way's (few long sequences): one block's chunk, several, ties across
    // chunks, k = S; and the block way's home, 64 sequences of 4,096.
    for (T s : {T{"topk", 3, 50, 10, 0, false}, T{"topk_ties", 2, 77, 15, 0, true}, T{"topk_k1", 2, 33, 1, 0, false},
                T{"threshold", 2, 77, 77, 1, false}, T{"threshold_long", 1, 2049, 2049, 1, true},
                T{"topk_S131072", 1, 131072, 26214, 0, false}, T{"topk_ties_S40000", 2, 40000, 8000, 0, true},
                T{"topk_all_S20000", 1, 20000, 20000, 0, false}, T{"threshold_S70001", 1, 70001, 70001, 1, true},
                T{"topk_B16_S16384", 16, 16384, 3276, 0, false}, T{"topk_B64_S4096", 64, 4096, 819, 0, true}}) {
        Case c = make("route_select", s.tag,
                      {{"B", s.B}, {"S", s.S}, {"k", s.k}, {"C", s.routing ? s.S : s.k}, {"routing", s.routing}});
        Gen g(c.name);
        Array n = g.normal("n", {s.B, s.S});
        if (s.ties)  // few distinct values: the lower position must win every tie
            for (float& x : n.f) x = std::round(x * 2.0f) / 2.0f;
        c.in.push_back(n);
        r.push_back(std::move(c));
    }
}

void add_aux_loss(std::vector<Case>& r) {
    for (int64_t N : {100, 4097}) {
        for (const char* op : {"aux_loss_forward", "aux_loss_backward"}) {
            Case c = make(op, "N" + std::to_string(N),
                          {{"N", N}, {"target", 0.2}, {"lambda_s", 0.5}, {"lambda_e", 0.01}, {"d_aux", 0.75}});
            Gen g(c.name);
            c.in.push_back(g.normal("l", {N}, 2.0f));
            r.push_back(std::move(c));
        }
    }
}

void add_attention(std::vector<Case>& r) {
    struct A { int64_t B, C, S, H, Hkv, Dh; std::vector<int32_t> counts; };
    const std::vector<A> shapes = {
        {2, 9, 37, 4, 2, 64, {9, 4}},        // GQA 2, ragged counts
        {1, 20, 65, 2, 1, 128, {20}},        // S one past a 64-key block
        {2, 150, 201, 4, 2, 64, {150, 37}},  // S not a multiple of any tile, a long ragged tail
        {3, 6, 130, 8, 2, 128, {6, 0, 1}},   // an empty sequence, a single query
        {2, 5, 17, 4, 4, 16, {5, 2}},        // the goldens' head dims
        {1, 7, 23, 2, 1, 8, {7}},
    };
    for (const A& s : shapes) {
        for (const char* op : {"sqdk_attention_forward", "sqdk_attention_backward"}) {
            Case c = make(op, "B" + std::to_string(s.B) + "_C" + std::to_string(s.C) + "_S" + std::to_string(s.S) +
                                  "_H" + std::to_string(s.H) + "_Hkv" + std::to_string(s.Hkv) + "_Dh" +
                                  std::to_string(s.Dh),
                          {{"B", s.B}, {"C", s.C}, {"S", s.S}, {"H", s.H}, {"Hkv", s.Hkv}, {"Dh", s.Dh}});
            Gen g(c.name);
            c.in.push_back(g.normal("q", {s.B, s.C, s.H * s.Dh}));
            auto [pos, counts] = g.selection(s.B, s.C, s.S, s.counts);
            c.in.push_back(pos);
            c.in.push_back(counts);
            c.in.push_back(g.normal("k", {s.B, s.S, s.Hkv * s.Dh}));
            c.in.push_back(g.normal("v", {s.B, s.S, s.Hkv * s.Dh}));
            if (std::string(op) == "sqdk_attention_backward") c.in.push_back(g.normal("d_o", {s.B, s.C, s.H * s.Dh}));
            r.push_back(std::move(c));
        }
    }
}

// The decode step's attention: one query per cache slot (C = 1) over max_len keys, slots without a
// routed query skipped; the CPU op is sqdk_attention_forward at C = 1.
void add_decode(std::vector<Case>& r) {
    struct A { int64_t seqs, max_len, H, Hkv, Dh; std::vector<int32_t> qcnt; };
    for (const A& s : std::vector<A>{{5, 300, 8, 2, 64, {1, 0, 1, 1, 0}}, {3, 600, 4, 1, 128, {1, 1, 1}},
                                     {2, 97, 2, 2, 64, {0, 1}}}) {
        Case c = make("sqdk_attention_decode", "seqs" + std::to_string(s.seqs) + "_len" + std::to_string(s.max_len) +
                                                   "_Dh" + std::to_string(s.Dh),
                      {{"seqs", s.seqs}, {"max_len", s.max_len}, {"H", s.H}, {"Hkv", s.Hkv}, {"Dh", s.Dh}});
        Gen g(c.name);
        c.in.push_back(g.normal("q", {s.seqs, s.H * s.Dh}));
        // each slot's position anywhere in its cache (not only the last row)
        std::vector<int32_t> qpos(static_cast<std::size_t>(s.seqs), -1);
        std::uniform_int_distribution<int32_t> at(0, static_cast<int32_t>(s.max_len - 1));
        for (int64_t j = 0; j < s.seqs; ++j)
            if (s.qcnt[j]) qpos[j] = j == 0 ? static_cast<int32_t>(s.max_len - 1) : at(g.rng);
        c.in.push_back(g.ints("qpos", {s.seqs}, qpos));
        c.in.push_back(g.ints("qcnt", {s.seqs}, s.qcnt));
        c.in.push_back(g.normal("k", {s.seqs, s.max_len, s.Hkv * s.Dh}));
        c.in.push_back(g.normal("v", {s.seqs, s.max_len, s.Hkv * s.Dh}));
        r.push_back(std::move(c));
    }
}

// The decode step's RoPE: row r (slot[r], -1 a padding row) at position pos[r]; its K goes to the
// slot's cache row, its Q (routed rows only) to the slot's query row.
void add_rope_step(std::vector<Case>& r) {
    struct A { int64_t max_seqs, max_len, H, Hkv, Dh; std::vector<int32_t> slot, pos, routed; };
    for (const A& s : std::vector<A>{{6, 50, 4, 2, 64, {3, 0, -1, 5, 1}, {49, 0, 0, 17, 3}, {1, 0, 1, 1, 1}},
                                     {2, 2000, 2, 1, 128, {1, 0}, {1999, 1234}, {1, 1}}}) {
        const int64_t n = static_cast<int64_t>(s.slot.size());
        Case c = make("rope_step", "n" + std::to_string(n) + "_len" + std::to_string(s.max_len) + "_Dh" +
                                       std::to_string(s.Dh),
                      {{"n", n}, {"max_seqs", s.max_seqs}, {"max_len", s.max_len}, {"H", s.H}, {"Hkv", s.Hkv},
                       {"Dh", s.Dh}, {"base", 10000.0}});
        Gen g(c.name);
        c.in.push_back(g.normal("kf", {n, s.Hkv * s.Dh}));
        c.in.push_back(g.normal("qf", {n, s.H * s.Dh}));
        c.in.push_back(g.ints("slot", {n}, s.slot));
        c.in.push_back(g.ints("pos", {n}, s.pos));
        c.in.push_back(g.ints("routed", {n}, s.routed));
        r.push_back(std::move(c));
    }
}

// The decode step's per-row ops before its GEMMs: router (threshold n > 0), both RMSNorms, the causal
// conv over the slot's conv cache and the cache's shift. Rows at positions below K - 1 have zeros in the
// cache rows before position 0 (as every backend's decode leaves them).
void add_decode_step_pre(std::vector<Case>& r) {
    struct A { int64_t max_seqs, max_len, D, K; std::vector<int32_t> slot, pos; };
    for (const A& s : std::vector<A>{{4, 64, 64, 4, {2, 0, -1, 3}, {10, 0, 0, 1}},
                                     {3, 4096, 256, 3, {1, 2, 0}, {4095, 2, 7}},
                                     {2, 16, 1024, 1, {1, 0}, {5, 0}}}) {
        const int64_t n = static_cast<int64_t>(s.slot.size()), D = s.D, K = s.K, P = K - 1;
        Case c = make("decode_step_pre", "n" + std::to_string(n) + "_D" + std::to_string(D) + "_K" + std::to_string(K),
                      {{"n", n}, {"max_seqs", s.max_seqs}, {"max_len", s.max_len}, {"D", D}, {"K", K}, {"eps", 1e-5}});
        Gen g(c.name);
        c.in.push_back(g.normal("x", {n, D}));
        c.in.push_back(g.normal("router_w", {D}, 0.1f));
        c.in.push_back(g.normal("router_b", {1}, 0.1f));
        Array lt("log_temp", {1});
        lt.f = {bf16_to_f32(f32_to_bf16(0.3f))};
        c.in.push_back(lt);
        c.in.push_back(g.normal("reflex_norm_w", {D}, 0.5f));
        c.in.push_back(g.normal("attn_norm_w", {D}, 0.5f));
        c.in.push_back(g.normal("conv_w", {D, K}, 0.5f));
        Array cache = g.normal("conv_cache", {s.max_seqs, std::max<int64_t>(P, 1), D});
        for (int64_t r = 0; r < n; ++r)  // cache row j holds the input P - j rows back: zero before position 0
            for (int64_t j = 0; j < P && s.slot[r] >= 0; ++j)
                if (s.pos[r] < P - j)
                    std::fill(cache.f.begin() + (s.slot[r] * P + j) * D, cache.f.begin() + (s.slot[r] * P + j + 1) * D,
                              0.0f);
        c.in.push_back(cache);
        c.in.push_back(g.ints("slot", {n}, s.slot));
        c.in.push_back(g.ints("pos", {n}, s.pos));
        r.push_back(std::move(c));
    }
}

void add_cross_entropy(std::vector<Case>& r) {
    struct X { int64_t N, V, D; };
    for (X s : {X{13, 97, 64}, X{70, 1000, 128}, X{5, 4099, 72}}) {
        Case c = make("cross_entropy_fused", "N" + std::to_string(s.N) + "_V" + std::to_string(s.V) + "_D" +
                                                 std::to_string(s.D),
                      {{"N", s.N}, {"V", s.V}, {"D", s.D}, {"grad_scale", 1.0 / static_cast<double>(s.N)}});
        Gen g(c.name);
        c.in.push_back(g.normal("h", {s.N, s.D}));
        c.in.push_back(g.normal("table", {s.V, s.D}, 0.2f));
        std::vector<int32_t> t(static_cast<std::size_t>(s.N));
        std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(s.V - 1));
        for (int32_t& x : t) x = tok(g.rng);
        t[0] = static_cast<int32_t>(s.V - 1);  // the last vocabulary row
        c.in.push_back(g.ints("targets", {s.N}, t));
        r.push_back(std::move(c));
    }
}

void add_adamw(std::vector<Case>& r) {
    struct W { int64_t n, step; double wd, grad_scale; };
    for (W s : {W{1001, 1, 0.1, 1.0}, W{4096 + 3, 10, 0.0, 0.5}}) {
        Case c = make("adamw_update", "n" + std::to_string(s.n) + "_step" + std::to_string(s.step),
                      {{"n", s.n}, {"step", s.step}, {"lr", 1e-3}, {"weight_decay", s.wd}, {"beta1", 0.9},
                       {"beta2", 0.95}, {"eps", 1e-8}, {"grad_scale", s.grad_scale}});
        Gen g(c.name);
        c.in.push_back(g.normal("master", {s.n}));
        c.in.push_back(g.normal("grad", {s.n}, 0.01f));
        c.in.push_back(g.normal("m", {s.n}, 0.001f));
        Array v = g.normal("v", {s.n}, 1e-5f);
        for (float& x : v.f) x = x * x;  // a second moment is >= 0
        c.in.push_back(v);
        r.push_back(std::move(c));
    }
}

}  // namespace

std::vector<Case> registry() {
    std::vector<Case> r;
    add_rms_norm(r);
    add_causal_conv(r);
    add_rms_norm_pair_conv(r);
    add_residual_out(r);
    add_swiglu(r);
    add_rope(r);
    add_router(r);
    add_route_select(r);
    add_aux_loss(r);
    add_attention(r);
    add_decode(r);
    add_rope_step(r);
    add_decode_step_pre(r);
    add_cross_entropy(r);
    add_adamw(r);
    return r;
}

}  // namespace hspmn::backend_ops
