// CudaBlock::run_rows: the sequence of kernels of one block over a set of rows (RowsPass in
// cuda_block_impl.h), shared by the forward (cuda_block.cu), the chunked inference forward
// (cuda_block_chunked.cu) and cached decoding (cuda_block_decode.cu). Every kernel but the conv and
// the attention is row-independent; the conv over a cache is the forward's arithmetic tap for tap
// (kernels/decode.cu) and the attention sees the same keys, so passes over different sets of rows
// differ only where cuBLASLt picks another algorithm for another M (float32 summation order).
#include "cuda_block_impl.h"

namespace hspmn::cuda::detail {

int64_t CudaBlock::chunk_row_bytes() const {
    const int64_t D = cfg_.D, F = cfg_.F, KV = cfg_.Hkv * cfg_.Dh;
    // carve_rows with one query slot per row (all routed): rstd, row_slot; h, a, c, a_sel (= attn), q bf16 [D];
    // gate|up bf16 [2F], act bf16 [F]; res f32 [D]; kf / qf / o f32 [max(KV, D)]; k, v bf16 [KV]; lse [H];
    // then decode_rows' row_pos, row_cache and rope rows, the query lists' qpos, qrow.
    return 4 + 4 + 2 * 5 * D + 2 * 3 * F + 4 * D + 4 * std::max(KV, D) + 2 * 2 * KV + 4 * cfg_.H + 12 +
           4 * cfg_.Dh + 8;
}

int64_t CudaBlock::one_pass_row_bytes() const {
    const int64_t D = cfg_.D, F = cfg_.F, KV = cfg_.Hkv * cfg_.Dh;
    // Activations: rstd, row_slot; h, c, a bf16 [D]; gate|up bf16 [2F], act bf16 [F]; res f32 [D]; kf f32 [KV];
    // k, v bf16 [KV]; a_sel, q, attn bf16 [D], qf, o f32 [D], lse [H] per query slot (as many as rows).
    return 4 + 4 + 2 * 3 * D + 2 * 3 * F + 4 * D + 4 * KV + 2 * 2 * KV + 2 * 3 * D + 4 * 2 * D + 4 * cfg_.H;
}

bool CudaBlock::fused_mlp_inference() const {
    return swiglu_gemm_wanted(d_, cfg_.D, cfg_.F, {w(P_REFLEX_GATE), w(P_REFLEX_UP)});
}

RowsBuffers CudaBlock::carve_rows(Carve& cv, int64_t n, int64_t Q, bool fused_mlp) const {
    const int64_t D = cfg_.D, F = cfg_.F, KV = cfg_.Hkv * cfg_.Dh;
    RowsBuffers b{};
    b.rstd = cv.take<float>(n);
    b.row_slot = cv.take<int32_t>(n);
    // a apart from h (2 D bytes a row more than sharing it: h is dead once the conv read it): both norms
    // are written by the one rms_norm_pair_forward that reads x once, before the conv. The fused entry
    // of whole sequences (rms_norm_pair_conv_forward) does not write h here (inference), so in those
    // passes h's piece goes unused.
    b.h = cv.take<bf16>(n * D);
    b.a = cv.take<bf16>(n * D);
    b.c = cv.take<bf16>(n * D);
    b.gu = fused_mlp ? nullptr : cv.take<bf16>(n * 2 * F);
    b.act = cv.take<bf16>(n * F);
    b.res = cv.take<float>(n * D);
    // kf is dead once RoPE wrote k, qf once RoPE wrote q; o is written after both.
    b.kf = b.qf = b.o = cv.take<float>(std::max(n * KV, Q * D));
    b.k = cv.take<bf16>(n * KV);
    b.v = cv.take<bf16>(n * KV);
    b.a_sel = cv.take<bf16>(Q * D);
    b.attn = b.a_sel;  // a_sel is dead once the Q GEMM read it
    b.q = cv.take<bf16>(Q * D);
    b.lse = cv.take<float>(Q * cfg_.H);
    return b;
}

void CudaBlock::run_rows(const RowsPass& p, const RowsBuffers& b) {
    const int64_t n = p.n, D = cfg_.D, F = cfg_.F, H = cfg_.H, Hkv = cfg_.Hkv, Dh = cfg_.Dh, KV = Hkv * Dh;
    const int64_t Kc = cfg_.conv_kernel;
    const float eps = cfg_.params.norm_eps;

    // Both norms of x in one read of it: h for the reflexive stream, a for the contextual one.
    // 1. Reflexive stream: h = rms_norm(x), c = causal_conv(h), m = down(silu(gate c) * up c).
    if (!p.meta && rms_norm_pair_conv_fits(D, Kc)) {
        // Whole sequences: the norms and the conv in one kernel; h is written only when kept.
        rms_norm_pair_conv_forward(d_, p.x, w(P_REFLEX_NORM), w(P_ATTN_NORM), w(P_REFLEX_CONV), eps, p.conv_B,
                                   p.conv_S, D, Kc, p.keep_h ? b.h : nullptr, b.a, b.c, b.rstd);
    } else if (!p.meta) {
        rms_norm_pair_forward(d_, p.x, w(P_REFLEX_NORM), w(P_ATTN_NORM), eps, n, D, b.h, b.a, b.rstd);
        causal_conv_forward(d_, b.h, w(P_REFLEX_CONV), p.conv_B, p.conv_S, D, Kc, b.c);
    } else {
        rms_norm_pair_forward(d_, p.x, w(P_REFLEX_NORM), w(P_ATTN_NORM), eps, n, D, b.h, b.a, b.rstd);
        // The conv reads each sequence's cache before it is shifted.
        decode_causal_conv(d_, b.h, p.conv_cache, w(P_REFLEX_CONV), *p.meta, n, D, Kc, b.c);
        decode_conv_cache_update(d_, b.h, *p.meta, D, Kc, p.conv_cache);
    }
    const int64_t Q = p.blocks * p.C;
    // With HSPMN_DOWN_RESIDUAL=1, the down GEMM with the residual in its epilogue (down_residual): out is
    // written there for the rows without a query slot, m + x kept in f32 (res, as [Q, D]) for the others
    // until o exists. It needs row_slot before the streams part. Not in decode steps (a few rows:
    // cuBLASLt's split-K wins there) and not under dropout (res = x + M m is the dropout's).
    const bool fused_down = !p.meta && !p.dropout && Q <= n &&
                            down_residual_wanted(d_, D, F, {b.act, w(P_REFLEX_DOWN)}, {p.x, p.out, b.res});
    if (Q > 0 && !p.dropout) row_slots(d_, p.q_rows, p.q_cnt, p.blocks, p.q_row_S, p.C, n, b.row_slot);
    // With HSPMN_STREAMS=2 the rest of the reflexive stream runs on a second CUDA stream beside the
    // contextual one (their buffers are disjoint: c, gu, act, res, with down_residual out too, against a, k,
    // v, q, attn, o; x is read by neither after the norms): kernels of
    // one may fill the SMs the other leaves idle (README.md "Two streams" has where that paid). Decode
    // steps (meta) stay on one stream.
    SideStream side(d_, !p.meta);
    // gu null: the pass was laid out for the fused kernel (carve_rows, CudaBlock::forward), which must run.
    if (!b.gu && p.keep_h) fail(HSPMN_ERR_INTERNAL, "run_rows: a training pass without its gate|up buffer");
    if (!b.gu || (!p.meta && swiglu_gemm_wanted(d_, D, F, {b.c, b.act, b.gu, w(P_REFLEX_GATE), w(P_REFLEX_UP)}))) {
        // gate, up and act in one kernel; gu (gate | up per row) is written only for the backward.
        swiglu_gemm(d_, n, D, F, b.c, w(P_REFLEX_GATE), w(P_REFLEX_UP), b.act, p.keep_h ? b.gu : nullptr,
                    p.keep_h ? b.gu + F : nullptr, 2 * F, SwigluGemmKernel::kWgmma);
    } else {
        // gate and up as one GEMM on the stacked [W_gate; W_up] ([2F, D]): row r of gu is gate | up.
        gemm(d_, false, true, n, 2 * F, D, 1.0f, b.c, D, w(P_REFLEX_GATE), D, 0.0f, b.gu, DType::BF16, 2 * F);
        swiglu_forward(d_, b.gu, b.gu + F, n, F, 2 * F, b.act);
    }
    if (fused_down) {
        down_residual(d_, n, D, F, b.act, w(P_REFLEX_DOWN), p.x, Q > 0 ? b.row_slot : nullptr, p.out,
                      Q > 0 ? b.res : nullptr);
    } else {
        // m on its own: residual_out adds x (and y o) at the end in one pass; under dropout res = x + M m here.
        gemm(d_, false, true, n, D, F, 1.0f, b.act, F, w(P_REFLEX_DOWN), F, 0.0f, b.res, DType::F32, D);
        if (p.dropout) dropout_residual(d_, *p.dropout, p.x, b.res, n, p.conv_S, D);
    }
    side.leave();

    // 2. Contextual stream: K, V of every row (into the caches before any attention, so rows attend the
    // earlier rows of their own pass), then Q and attention for the query slots only.
    gemm(d_, false, true, n, KV, D, 1.0f, b.a, D, w(P_ATTN_K), D, 0.0f, b.kf, DType::F32, KV);
    gemm(d_, false, true, n, KV, D, 1.0f, b.a, D, w(P_ATTN_V), D, 0.0f, b.v, DType::BF16, KV);
    rope_forward(d_, b.kf, b.k, n, Hkv, Dh, nullptr, nullptr, 0, p.key_S, p.cos_t, p.sin_t);
    const bf16* keys = b.k;
    const bf16* values = b.v;
    if (p.kv_row) {
        decode_kv_write(d_, b.k, b.v, p.kv_row, n, KV, p.k_cache, p.v_cache);
        keys = p.k_cache;
        values = p.v_cache;
    }
    if (Q > 0) {
        gather_selected(d_, b.a, p.q_rows, p.q_cnt, p.blocks, p.q_row_S, p.C, D, b.a_sel);
        gemm(d_, false, true, Q, D, D, 1.0f, b.a_sel, D, w(P_ATTN_Q), D, 0.0f, b.qf, DType::F32, D);
        rope_forward(d_, b.qf, b.q, Q, H, Dh, p.q_tab, p.q_cnt, p.C, p.att_S, p.cos_t, p.sin_t);
        for (int64_t i = 0; i < p.run_count; ++i) {
            const DecodeRun& r = p.runs[i];
            const int64_t qo = r.block0 * p.C, ko = r.lo * p.att_S * KV;
            sqdk_attention_forward(d_, AttentionShape{r.len, p.C, p.att_S, H, Hkv, Dh}, b.q + qo * D, p.q_pos + qo,
                                   p.q_cnt + r.block0, keys + ko, values + ko, b.attn + qo * D,
                                   b.lse + r.block0 * H * p.C);
        }
        gemm(d_, false, true, Q, D, D, 1.0f, b.attn, D, w(P_ATTN_O), D, 0.0f, b.o, DType::F32, D);
    }
    // 3. out = x + m + y o (y = 1 in value) on the query rows, x + m on the others.
    side.join();
    if (p.dropout) {
        if (Q > 0) {
            // o is kept dropped: backward's dy = d_out . (M o) reads it as the forward added it.
            dropout_rows_f32(d_, *p.dropout, kDropoutTagAttn, b.o, Q, p.q_row_S, D, p.q_rows, p.q_cnt, p.C);
            gate_scatter_forward(d_, b.o, p.q_rows, p.q_cnt, p.blocks, p.q_row_S, p.C, D, b.res);
        }
        f32_to_bf16(d_, b.res, p.out, n * D);
    } else if (fused_down) {
        if (Q > 0) residual_out_selected(d_, b.res, b.o, p.q_rows, p.q_cnt, p.blocks, p.q_row_S, p.C, D, p.out);
    } else {
        residual_out(d_, b.res, p.x, b.o, Q > 0 ? b.row_slot : nullptr, n, D, p.out);
    }
}

}  // namespace hspmn::cuda::detail
