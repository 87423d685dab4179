#include "footprint.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>

#include "alloc.h"
#include "backend.h"
#include "error.h"

namespace hspmn {

namespace {

// cpu/gemm.cpp packs a [columns, KC] panel of B per call, and per worker an A block of MC = 16 x 6
// rows by KC.
constexpr double kGemmKc = 256.0;
constexpr double kGemmABlockBytes = 16.0 * 6.0 * 256.0 * 4.0;
// cpu/cross_entropy_fused.cpp's row chunk; cuda/kernels/cross_entropy_fused.cu's logits per chunk.
constexpr double kCpuCeChunkRows = 256.0;
constexpr double kCudaCeChunkElems = 16777216.0;

struct Dims {
    double D, F, H, KV, Dh, P;  // P: parameters of one block
};

// CPU workers: the default pool (every hardware thread); a context asking for more is rare.
// The GEMM scratch of a product with `columns` output columns, with `threads` workers each holding an
// A block (the context's thread count: an estimate from the machine's core count over-counts a context
// with fewer threads than the host has cores; by how much: BENCHMARKS.md).
double cpu_gemm(double columns, double threads) {
    return kGemmKc * 4.0 * (columns + 16.0) + kGemmABlockBytes * std::max(threads, 1.0);
}

Dims dims(const BlockConfig& c) {
    Dims d{static_cast<double>(c.D), static_cast<double>(c.F), static_cast<double>(c.H),
           static_cast<double>(c.Hkv * c.Dh), static_cast<double>(c.Dh), 0.0};
    for (const ParamInfo& p : param_table(c)) d.P += static_cast<double>(p.numel);
    return d;
}

double largest_param(const BlockConfig& c) {
    double m = 0.0;
    for (const ParamInfo& p : param_table(c)) m = std::max(m, static_cast<double>(p.numel));
    return m;
}

// Selected (query) rows of B sequences of S tokens: top-k takes k per sequence; threshold routing may
// select every token.
double routed_rows(const BlockConfig& c, int64_t B, int64_t S) {
    if (c.params.routing == HSPMN_ROUTING_TOPK)
        return static_cast<double>(B) * static_cast<double>(topk_count(S, c.params.sparsity_k));
    return static_cast<double>(B) * static_cast<double>(S);
}

std::string bytes_text(double b) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%.0f bytes (%.1f GiB)", b, b / 1073741824.0);
    return buf;
}

}  // namespace

Footprint max_of(const Footprint& a, const Footprint& b) {
    return {std::max(a.host, b.host), std::max(a.device, b.device)};
}

Footprint growth(const Footprint& to, const Footprint& from) {
    return {std::max(0.0, to.host - from.host), std::max(0.0, to.device - from.device)};
}

Footprint block_params_footprint(const BlockConfig& cfg, int32_t backend) {
    const Dims d = dims(cfg);
    if (backend == HSPMN_BACKEND_CUDA)
        // param_ and weight_ bf16, grad_ f32 on the device; the constructor stages one parameter at a
        // time on the host as f32 + bf16.
        return {6.0 * largest_param(cfg), 8.0 * d.P};
    // param_ bf16, weight_ f32 (the compute copy), grad_ f32.
    return {10.0 * d.P, 0.0};
}

Footprint block_training_footprint(const BlockConfig& cfg, int64_t B, int64_t S, int32_t backend, int threads,
                                   Footprint* forward_peak, Footprint* backward_peak) {
    const Dims d = dims(cfg);
    const double N = static_cast<double>(B) * static_cast<double>(S);
    const double Nq = routed_rows(cfg, B, S), s = static_cast<double>(S), b = static_cast<double>(B);
    const double gemm = cpu_gemm(std::max(d.F, d.D), threads);
    // sqdk_attention: per worker scores up to the furthest query position, and the query -> sequence map
    const double attention = 4.0 * std::max(threads, 1) * s + 8.0 * Nq;
    if (backend == HSPMN_BACKEND_CUDA) {
        // cuda_block.cu Activations (BC = Nq rows padded per sequence) and rope tables, kept with the
        // block once grown; one rstd [N] for both norms (rms_norm_pair_forward).
        const double acts = 8.0 * N * d.D + 6.0 * N * d.F + 4.0 * N * d.KV + 10.0 * Nq * d.D + 4.0 * Nq * d.H +
                            4.0 * Nq + 16.0 * N + 4.0 * b;
        const double rope = 4.0 * s * d.Dh;
        // The device's training arena (runtime.h), shared by every block, so counted once: the forward's
        // f32 residual sum, its rows' query slots [N] i32, K and Q before RoPE (4 pieces), the backward's
        // BackwardScratch (11 pieces: dk | dv one [N, 2 KV] piece, d_gate | d_up one [N, 2F]), each rounded
        // up to 256 bytes; the attention backward's delta [B, H, C] f32 is the device's too.
        const double fwd = 4.0 * N * d.D + 4.0 * N + 4.0 * N * d.KV + 4.0 * Nq * d.D + 4.0 * 256.0;
        // d_act's piece also holds d_c [N, D] f32 (d_a lives until the pair norm backward): 2 N max(F, 2 D).
        const double back = 8.0 * N * d.D + 4.0 * N * d.F + 2.0 * N * std::max(d.F, 2.0 * d.D) + 4.0 * N * d.KV +
                            8.0 * Nq * d.D + 4.0 * Nq + 4.0 * N + 11.0 * 256.0;
        // The training forward sizes the arena for its backward too (cuda_block.cu).
        const double arena = std::max(fwd, back);
        if (forward_peak) *forward_peak = {0.0, arena};
        if (backward_peak) *backward_peak = {0.0, arena + 4.0 * Nq * d.H};
        return {0.0, acts + rope};
    }
    // cpu_block.cpp Activations, all float32: x, h, c, a [N, D]; gate, up, act [N, F]; k, v [N, KV];
    // a_sel, q, attn, o [Nq, D]; lse [Nq, H]; l, n, rstd [N]; the rotary table; row indices.
    const double acts = 4.0 * (4.0 * N * d.D + 3.0 * N * d.F + 2.0 * N * d.KV + 4.0 * Nq * d.D + Nq * d.H + 3.0 * N +
                               s * d.Dh) +
                        12.0 * Nq + 4.0 * N + 8.0 * (b + 1.0);
    // forward: y [N, D] f32, the selection, the GEMM panels and the attention's scratch beside the
    // activations being built.
    if (forward_peak) *forward_peak = {4.0 * N * d.D + 4.0 * Nq + gemm + attention, 0.0};
    if (backward_peak) {
        // backward (f32): d_out, dx, d_a [N, D] throughout; then the attention part (dk, dv [N, KV],
        // d_asel, d_o, d_attn, dq [Nq, D]) or the reflex part (d_act, d_gate, d_up [N, F], then
        // d_c, d_h [N, D] once d_act is freed).
        const double attn = 8.0 * N * d.KV + 16.0 * Nq * d.D + 4.0 * Nq * d.H;
        const double reflex = std::max(12.0 * N * d.F, 8.0 * N * d.F + 8.0 * N * d.D);
        *backward_peak = {12.0 * N * d.D + 4.0 * Nq + 4.0 * N + std::max(attn, reflex) + gemm + attention, 0.0};
    }
    return {acts, 0.0};
}

double model_param_count(const hspmn_model_params& p) {
    const BlockConfig cfg = make_block_config(p.block);
    const double V = static_cast<double>(p.vocab_size), D = static_cast<double>(cfg.D);
    return V * D + static_cast<double>(p.num_layers) * dims(cfg).P + D;
}

Footprint model_footprint(const hspmn_model_params& p, int32_t backend) {
    const BlockConfig cfg = make_block_config(p.block);
    const double V = static_cast<double>(p.vocab_size), D = static_cast<double>(cfg.D);
    const double L = static_cast<double>(p.num_layers);
    Footprint f = L * block_params_footprint(cfg, backend);
    if (backend == HSPMN_BACKEND_CUDA) f.host = 0.0;  // the blocks' staging is transient, counted below once
    // Embedding value bf16 + gradient f32, final norm the same; master, m, v f32 for every parameter.
    const double own = 6.0 * V * D + 6.0 * D + 12.0 * model_param_count(p);
    // Construction stages one parameter at a time on the host (bf16 bits + f32), the embedding as bf16.
    const double staging = 6.0 * std::max(V * D, largest_param(cfg)) + 2.0 * V * D;
    if (backend == HSPMN_BACKEND_CUDA) {
        f.device += own;
        f.host += staging;
    } else {
        f.host += own + staging;
    }
    return f;
}

Footprint model_rows_footprint(const hspmn_model_params& p, int64_t B, int64_t S, bool training, int32_t backend,
                               int threads, bool recompute) {
    const BlockConfig cfg = make_block_config(p.block);
    const double N = static_cast<double>(B) * static_cast<double>(S);
    const double V = static_cast<double>(p.vocab_size), D = static_cast<double>(cfg.D);
    const double L = static_cast<double>(p.num_layers);
    // model.cpp ensure_rows: tokens, targets [N] i32; act_a, act_b, act_c, hidden [N, D] bf16; rstd [N];
    // backward's dh [N, D] f32; the logits of hspmn_model_logits [B, V] f32.
    double rows = 8.0 * N * D + 12.0 * N + 4.0 * static_cast<double>(B) * V;
    if (training) rows += 4.0 * N * D;
    Footprint kept, peak;
    if (training) {
        Footprint fwd, bwd;
        const Footprint layer = block_training_footprint(cfg, B, S, backend, threads, &fwd, &bwd);
        if (recompute) {
            // model.cpp inputs_ [L + 1, N, D] bf16, and one layer's activations at a time (the CUDA
            // blocks share theirs; a CPU block frees its own after each forward and backward).
            const double inputs = 2.0 * (L + 1.0) * N * D;
            kept = layer + (backend == HSPMN_BACKEND_CUDA ? Footprint{0.0, inputs} : Footprint{inputs, 0.0});
        } else {
            kept = L * layer;
            // A CPU layer builds its new activations while it still holds the previous step's.
            if (backend != HSPMN_BACKEND_CUDA) fwd.host += layer.host;
        }
        peak = max_of(fwd, bwd);
    }
    if (backend == HSPMN_BACKEND_CUDA) {
        // The head's chunked logits (f32 + bf16 dz) and per-row losses; the embedding gradient's sort.
        const double head = 6.0 * std::min(kCudaCeChunkElems, N * V) + 4.0 * N + 24.0 * N + 8.0 * N;
        kept.device += rows + head;
    } else {
        kept.host += rows;
        // The CPU head widens h and the table to f32 (plus a [256, V] chunk of logits); the final norm
        // widens x and dx.
        const double head = std::max(4.0 * N * D + 4.0 * V * D + 4.0 * std::min(kCpuCeChunkRows, N) * V +
                                         8.0 * std::min(kCpuCeChunkRows, N) + cpu_gemm(std::max(V, D), threads),
                                     8.0 * N * D);
        peak.host = std::max(peak.host, head);
    }
    return kept + peak;
}

Footprint decoder_footprint(const hspmn_model_params& p, int32_t max_seqs, int64_t max_len, int32_t backend) {
    const BlockConfig cfg = make_block_config(p.block);
    const double L = static_cast<double>(p.num_layers), seqs = static_cast<double>(max_seqs);
    const double len = static_cast<double>(max_len), D = static_cast<double>(cfg.D);
    const double KV = static_cast<double>(cfg.Hkv * cfg.Dh), Pc = static_cast<double>(std::max<int64_t>(cfg.conv_kernel - 1, 1));
    // K and V [max_seqs, max_len, KV] and the conv inputs [max_seqs, conv_kernel - 1, D] per layer, in
    // the forward's precision. No rotary table of max_len rows: decode computes the cos/sin of a call's
    // rows (decode_rows, rope_step), so a 1M-token decoder is not charged 12 GiB it does not hold.
    const double elem = backend == HSPMN_BACKEND_CUDA ? 2.0 : 4.0;
    const double caches = L * (2.0 * seqs * len * KV * elem + seqs * Pc * D * elem);
    // A step of one token per slot (hspmn_decoder_step): its row buffers (activations, hidden, logits [V]
    // f32, staging) and each layer's decode scratch for max_seqs rows, which the CUDA blocks keep (the
    // forward's activations at n = max_seqs rows, every row routed at worst); the CPU frees a layer's
    // before the next. An append of more rows (a prefill) grows these with its own row count.
    const double V = static_cast<double>(p.vocab_size), F = static_cast<double>(cfg.F);
    const double rows = seqs * (8.0 * D + 4.0 * V + 64.0);
    const double layer = seqs * (26.0 * D + 6.0 * F + 8.0 * KV + 64.0);
    if (backend == HSPMN_BACKEND_CUDA) return {rows, caches + rows + L * layer};
    return {caches + rows + 2.0 * layer, 0.0};
}

void require_memory(Backend& backend, const Footprint& need, const char* what) {
    if (need.host > 0.0) {
        const HostMemory h = host_memory_available();
        if (need.host > static_cast<double>(h.available))
            fail(HSPMN_ERR_OUT_OF_MEMORY,
                 "out of memory: %s needs about %s of host memory, but %s are available (%s); nothing was allocated",
                 what, bytes_text(need.host).c_str(), bytes_text(static_cast<double>(h.available)).c_str(), h.source);
    }
    if (need.device > 0.0) {
        std::size_t free_bytes = 0, total = 0;
        if (backend.device_memory(&free_bytes, &total) && need.device > static_cast<double>(free_bytes))
            fail(HSPMN_ERR_OUT_OF_MEMORY,
                 "out of memory: %s needs about %s of device memory, but %s are available (free on the device "
                 "of %s in all, cudaMemGetInfo); nothing was allocated",
                 what, bytes_text(need.device).c_str(), bytes_text(static_cast<double>(free_bytes)).c_str(),
                 bytes_text(static_cast<double>(total)).c_str());
    }
}

}  // namespace hspmn
