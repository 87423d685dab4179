// CudaBlock::decode: cached decoding on the GPU (the CPU's is cpu_block_decode.cpp).
#include "cuda_block_impl.h"

namespace hspmn::cuda::detail {

// ---- cached decoding (core/backend.h DecodeCall, MODEL.md "Decoding with a cache") ----
//
// For its rows, decode runs the forward's kernels in the forward's order with the same roundings:
// router_forward without noise, rms_norm_forward, the causal conv's arithmetic over [the slot's conv
// cache, the new rows], the same GEMMs, swiglu, rope_forward from the same table, sqdk_attention and
// gate_scatter. Only the GEMMs' M differs from the full forward (cuBLASLt may pick another algorithm
// for another M), so the outputs agree to float32 summation order, not bit for bit.
//
// No host synchronisation: which rows the router selects stays on the device. decode_select writes
// per-sequence query lists [blocks, C] (C = the most rows of one sequence; padding past each count,
// as the forward's threshold routing pads to C = S), and the Q/O GEMMs, RoPE, attention and scatter
// take those lists with their device-side counts, exactly as the forward does. The host knows only
// the call's shape (rows per sequence, slots, positions), which it uploads once per call.
//
// Query blocks and attention launches: the Triton kernels want 16-byte aligned pointers and index
// K/V by batch * S. Sequences sorted by slot are grouped into runs of nearby slots; a run is one
// launch over cache slots lo .. lo + len - 1 (lo a multiple of 4, so k_cache + lo * max_len * KV is
// aligned: KV is even) with query blocks block0 .. (block0 a multiple of 4, so q, pos, counts and lse
// offsets are aligned: D is even). Slots of a run without a sequence of this call get count 0.
// Slots 0..n-1 decoded together are one run and one launch.
void CudaBlock::decode(const DecodeCall& call) {
    const int64_t n = call.n, seqs = call.seqs, max_len = call.max_len;
    if (n <= 0 || seqs <= 0) return;
    const int64_t D = cfg_.D, F = cfg_.F, H = cfg_.H, Hkv = cfg_.Hkv, Dh = cfg_.Dh, KV = Hkv * Dh;
    const int64_t Kc = cfg_.conv_kernel;
    // Rows, positions and query slots are i32 on the device (the attention's Pos is i32).
    if (n > INT32_MAX || seqs > INT32_MAX || max_len > INT32_MAX || call.max_seqs > INT32_MAX)
        fail(HSPMN_ERR_SHAPE, "CUDA decode: %lld rows of %lld sequences, max_len %lld: the CUDA decode indexes rows "
             "and positions in int32", static_cast<long long>(n), static_cast<long long>(seqs),
             static_cast<long long>(max_len));
    const void* const ptrs[] = {call.x, call.out, call.k_cache, call.v_cache, call.conv_cache};
    for (const void* p : ptrs)
        if (reinterpret_cast<uintptr_t>(p) % 16 != 0)
            fail(HSPMN_ERR_INTERNAL, "CUDA decode: x, out and the caches must be 16-byte aligned");
    // A launch's grid y is len * H <= 65535, len a multiple of 4 (alignment, above).
    const int64_t max_run = (65535 / H) / 4 * 4;
    if (max_run < 4) fail(HSPMN_ERR_SHAPE, "CUDA decode: %lld heads exceed the attention grid", static_cast<long long>(H));
    refresh_weights();
    has_act_ = false;  // the forward's scratch (act_) is rewritten below
    DecodeScratch& X = dec_;
    Activations& A = act_;

    // ---- the call's shape on the host: query capacity C, runs, query block of each sequence
    int64_t C = 0, end = 0;  // end: one past the last position of the call
    for (int64_t j = 0; j < seqs; ++j) {
        C = std::max(C, call.row_start[j + 1] - call.row_start[j]);
        end = std::max(end, call.pos0[j] + call.row_start[j + 1] - call.row_start[j]);
    }
    X.order.resize(static_cast<std::size_t>(seqs));
    for (int64_t j = 0; j < seqs; ++j) X.order[j] = j;
    std::sort(X.order.begin(), X.order.end(), [&](int64_t a, int64_t b) { return call.slot[a] < call.slot[b]; });
    X.runs.clear();
    const int64_t meta_count = 1 + (seqs + 1) + 3 * seqs;
    int32_t* mh = X.upload.begin(d_, meta_count);
    int32_t* h_row_start = mh + 1;
    int32_t* h_slot = h_row_start + seqs + 1;
    int32_t* h_pos0 = h_slot + seqs;
    int32_t* h_qblock = h_pos0 + seqs;
    for (int64_t j : X.order) {
        const int64_t s = call.slot[j];
        // Join the current run when the slot is at most 4 past its end (at most 3 empty blocks) and
        // the run stays launchable; else a new run from the aligned slot below s.
        if (X.runs.empty() || s > X.runs.back().lo + X.runs.back().len + 3 || s - X.runs.back().lo >= max_run) {
            const int64_t block0 = X.runs.empty() ? 0 : (X.runs.back().block0 + X.runs.back().len + 3) / 4 * 4;
            X.runs.push_back({s / 4 * 4, 0, block0});
        }
        DecodeRun& r = X.runs.back();
        r.len = s - r.lo + 1;
        h_qblock[j] = static_cast<int32_t>(r.block0 + (s - r.lo));
    }
    const int64_t blocks = X.runs.back().block0 + X.runs.back().len;
    mh[0] = static_cast<int32_t>(n);
    for (int64_t j = 0; j <= seqs; ++j) h_row_start[j] = static_cast<int32_t>(call.row_start[j]);
    for (int64_t j = 0; j < seqs; ++j) {
        h_slot[j] = call.slot[j];
        h_pos0[j] = static_cast<int32_t>(call.pos0[j]);
    }
    int32_t* meta = grow<int32_t>(d_, X.meta, meta_count);
    X.upload.send(d_, meta, meta_count);
    const DecodeMeta m{meta + 1, meta + 1 + seqs + 1, meta + 1 + seqs + 1 + seqs, meta + 1 + seqs + 1 + 2 * seqs,
                       static_cast<int32_t>(seqs)};
    const int32_t* n_rows = meta;  // [1] = n: the counts of the keys' rope_forward (one "sequence" of n rows)
    // The table doubles up to max_len: grown to each step's position it would reallocate at every step,
    // sized max_len at once it would hold rows a decoder with room for long contexts may never reach.
    int64_t rope_rows = 1;
    while (rope_rows < end) rope_rows *= 2;
    ensure_rope(std::max(end, std::min(rope_rows, max_len)));
    const float* cos_t = rope_cos_.as<float>();
    const float* sin_t = rope_sin_.as<float>();
    const bf16* x = reinterpret_cast<const bf16*>(call.x);
    bf16* k_cache = static_cast<bf16*>(call.k_cache);
    bf16* v_cache = static_cast<bf16*>(call.v_cache);
    bf16* conv_cache = static_cast<bf16*>(call.conv_cache);

    // 1. Router (n = l / t, no noise) and the query lists of the selected rows.
    float* l = grow<float>(d_, A.l, n);
    float* nsc = grow<float>(d_, A.n, n);
    router_forward(d_, x, w(P_ROUTER_W), w(P_ROUTER_B), w(P_ROUTER_LOG_TEMP), nullptr, n, D, l, nsc,
                   grow<float>(d_, A.temp, 2));
    int32_t* qpos = grow<int32_t>(d_, A.idx, blocks * C);
    int32_t* qcnt = grow<int32_t>(d_, A.cnt, blocks);
    int32_t* qrow = grow<int32_t>(d_, X.qrow, blocks * C);
    check(cudaMemsetAsync(qcnt, 0, static_cast<std::size_t>(blocks) * 4, stream(d_)), "cudaMemsetAsync (decode counts)");
    decode_select(d_, nsc, m, C, qpos, qrow, qcnt, call.routed);
    int32_t* row_pos = grow<int32_t>(d_, X.row_pos, n);
    int64_t* row_cache = grow<int64_t>(d_, X.row_cache, n);
    decode_rows(d_, m, n, max_len, row_pos, row_cache);

    // 2. Reflexive stream; the conv reads the slot's cache before it is shifted.
    float* rstd_h = grow<float>(d_, A.rstd_h, n);
    bf16* h = grow<bf16>(d_, A.h, n * D);
    bf16* c = grow<bf16>(d_, A.c, n * D);
    bf16* gate = grow<bf16>(d_, A.gate, n * F);
    bf16* up = grow<bf16>(d_, A.up, n * F);
    bf16* act = grow<bf16>(d_, A.act, n * F);
    float* res = grow<float>(d_, A.res, n * D);
    rms_norm_forward(d_, x, w(P_REFLEX_NORM), cfg_.params.norm_eps, n, D, h, rstd_h);
    decode_causal_conv(d_, h, conv_cache, w(P_REFLEX_CONV), m, n, D, Kc, c);
    decode_conv_cache_update(d_, h, m, D, Kc, conv_cache);
    gemm(d_, false, true, n, F, D, 1.0f, c, D, w(P_REFLEX_GATE), D, 0.0f, gate, DType::BF16, F);
    gemm(d_, false, true, n, F, D, 1.0f, c, D, w(P_REFLEX_UP), D, 0.0f, up, DType::BF16, F);
    swiglu_forward(d_, gate, up, n * F, act);
    bf16_to_f32(d_, x, res, n * D);
    gemm(d_, false, true, n, D, F, 1.0f, act, F, w(P_REFLEX_DOWN), F, 1.0f, res, DType::F32, D);

    // 3. Contextual stream: K, V of every row into the caches (before the attention, so a prefill
    // attends its own earlier rows), then Q and attention for the selected rows.
    float* rstd_a = grow<float>(d_, A.rstd_a, n);
    bf16* a = grow<bf16>(d_, A.a, n * D);
    float* kf = grow<float>(d_, A.kf, n * KV);
    bf16* k = grow<bf16>(d_, A.k, n * KV);
    bf16* v = grow<bf16>(d_, A.v, n * KV);
    rms_norm_forward(d_, x, w(P_ATTN_NORM), cfg_.params.norm_eps, n, D, a, rstd_a);
    gemm(d_, false, true, n, KV, D, 1.0f, a, D, w(P_ATTN_K), D, 0.0f, kf, DType::F32, KV);
    gemm(d_, false, true, n, KV, D, 1.0f, a, D, w(P_ATTN_V), D, 0.0f, v, DType::BF16, KV);
    // The rows as one query list [1, n] at their positions: rope_forward's per-row position mode.
    rope_forward(d_, kf, k, n, Hkv, Dh, row_pos, n_rows, n, max_len, cos_t, sin_t);
    decode_kv_write(d_, k, v, row_cache, n, KV, k_cache, v_cache);
    const int64_t Q = blocks * C;
    bf16* a_sel = grow<bf16>(d_, A.a_sel, Q * D);
    float* qf = grow<float>(d_, A.qf, Q * D);
    bf16* q = grow<bf16>(d_, A.q, Q * D);
    bf16* attn = grow<bf16>(d_, A.attn, Q * D);
    float* lse = grow<float>(d_, A.lse, blocks * H * C);
    float* o = grow<float>(d_, A.o, Q * D);
    // S = 0: qrow holds rows of a / res directly (token b * S + qrow[b, j]).
    gather_selected(d_, a, qrow, qcnt, blocks, 0, C, D, a_sel);
    gemm(d_, false, true, Q, D, D, 1.0f, a_sel, D, w(P_ATTN_Q), D, 0.0f, qf, DType::F32, D);
    rope_forward(d_, qf, q, Q, H, Dh, qpos, qcnt, C, max_len, cos_t, sin_t);
    for (const DecodeRun& r : X.runs) {
        const int64_t qo = r.block0 * C, ko = r.lo * max_len * KV;
        sqdk_attention_forward(d_, AttentionShape{r.len, C, max_len, H, Hkv, Dh}, q + qo * D, qpos + qo,
                               qcnt + r.block0, k_cache + ko, v_cache + ko, attn + qo * D, lse + r.block0 * H * C);
    }
    gemm(d_, false, true, Q, D, D, 1.0f, attn, D, w(P_ATTN_O), D, 0.0f, o, DType::F32, D);
    // 4. out = res + y o on the selected rows (y = 1 in value).
    gate_scatter_forward(d_, o, qrow, qcnt, blocks, 0, C, D, res);
    f32_to_bf16(d_, res, reinterpret_cast<bf16*>(call.out), n * D);
}

}  // namespace hspmn::cuda::detail
