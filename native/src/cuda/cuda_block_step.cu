// CudaBlock::decode_step: one token for each of up to kSkinnyMaxRows slots, with every index on the
// device so the decoder can capture a whole multi-layer step as one CUDA graph (model/decoder.cpp).
//
// Eight launches per block, where decode spends about twenty: decode_step_pre (router, both norms,
// conv, conv cache shift, routing into per-slot query lists), then skinny_gemm for gate+up with
// SwiGLU, down with the residual, K+V with V written into its cache row, Q (no weight read when no
// row is routed), rope_step (K into the cache, routed Q into its slot's query row),
// sqdk_attention_decode over the slots' queries (split along the keys; a slot without a routed row
// has count 0 and its blocks exit at once; head dims it lacks take the Triton kernel), and O added to
// the routed rows. The math is decode's, kernel for kernel; only the GEMMs'
// f32 summation order differs from cuBLASLt's (as decode's differs from the full forward's).
#include "cuda_block_impl.h"

namespace hspmn::cuda::detail {

bool CudaBlock::has_decode_step(int64_t n) const {
    const int64_t D = cfg_.D, F = cfg_.F, KV = cfg_.Hkv * cfg_.Dh;
    return n >= 1 && n <= kSkinnyMaxRows && skinny_gemm_fits(n, F, D) && skinny_gemm_fits(n, D, F) &&
           skinny_gemm_fits(n, KV, D) && skinny_gemm_fits(n, D, D) && cfg_.conv_kernel <= 8 && D % 8 == 0;
}

// Grows only; every growth moves buffers a captured step holds, which step_generation() reports.
void CudaBlock::ensure_step(int64_t seqs, int64_t max_len) {
    const int64_t R = kSkinnyMaxRows, D = cfg_.D, F = cfg_.F, KV = cfg_.Hkv * cfg_.Dh;
    const bool more_seqs = seqs > step_.seqs;
    if (step_.c.bytes() == 0) {
        ++step_generation_;
        grow<bf16>(d_, step_.c, R * D);
        grow<bf16>(d_, step_.a, R * D);
        grow<bf16>(d_, step_.act, R * F);
        grow<float>(d_, step_.res, R * D);
        grow<float>(d_, step_.kf, R * KV);
        grow<float>(d_, step_.qf, R * D);
        grow<int32_t>(d_, step_.routed, R);
        grow<int64_t>(d_, step_.row_cache, R);
        for (int64_t m : {int64_t{8}, int64_t{16}, R}) {
            skinny_gemm_scratch(d_, step_.gemm, m, F, D, 2);
            skinny_gemm_scratch(d_, step_.gemm, m, D, F, 1);
            skinny_gemm_scratch(d_, step_.gemm, m, KV, D, 2);
            skinny_gemm_scratch(d_, step_.gemm, m, D, D, 1);
        }
    }
    if (more_seqs) {
        ++step_generation_;
        grow<bf16>(d_, step_.q, seqs * D);
        grow<bf16>(d_, step_.attn, seqs * D);
        grow<float>(d_, step_.lse, seqs * cfg_.H);
        grow<int32_t>(d_, step_.qpos, seqs);
        grow<int32_t>(d_, step_.qcnt, seqs);
        step_.qcnt.zero(d_);  // the invariant between steps: no slot has a query
        step_.seqs = seqs;
    }
    if (sqdk_attention_decode_fits(cfg_.H, cfg_.Hkv, cfg_.Dh) &&
        (more_seqs || max_len > step_.attention_len || step_.attention.partials.bytes() == 0)) {
        const void* before = step_.attention.partials.data();
        step_.attention_len = std::max(max_len, step_.attention_len);
        sqdk_attention_decode_scratch(d_, step_.attention, step_.seqs, step_.attention_len, cfg_.H, cfg_.Hkv, cfg_.Dh);
        if (step_.attention.partials.data() != before)
            ++step_generation_;
    }
}

void CudaBlock::decode_step(const DecodeStepCall& call) {
    const int64_t n = call.n, D = cfg_.D, F = cfg_.F, H = cfg_.H, Hkv = cfg_.Hkv, Dh = cfg_.Dh, KV = Hkv * Dh;
    if (!has_decode_step(n)) fail(HSPMN_ERR_INTERNAL, "CUDA decode_step: %lld rows", static_cast<long long>(n));
    if (call.max_seqs * H > 65535)
        fail(HSPMN_ERR_SHAPE, "CUDA decode step: %lld slots x %lld heads exceed the attention grid (65535)",
             static_cast<long long>(call.max_seqs), static_cast<long long>(H));
    refresh_weights();
    ensure_step(call.max_seqs, call.max_len);
    has_act_ = false;
    StepScratch& T = step_;
    const bf16* x = reinterpret_cast<const bf16*>(call.x);
    bf16* out = reinterpret_cast<bf16*>(call.out);
    bf16* k_cache = static_cast<bf16*>(call.k_cache);
    bf16* v_cache = static_cast<bf16*>(call.v_cache);
    bf16* c = T.c.as<bf16>();
    bf16* a = T.a.as<bf16>();
    bf16* act = T.act.as<bf16>();
    float* res = T.res.as<float>();
    float* kf = T.kf.as<float>();
    float* qf = T.qf.as<float>();
    int32_t* routed = T.routed.as<int32_t>();
    int64_t* row_cache = T.row_cache.as<int64_t>();
    int32_t* qpos = T.qpos.as<int32_t>();
    int32_t* qcnt = T.qcnt.as<int32_t>();

    // 1. Router, norms, conv (its cache shifted), the slots' query lists.
    decode_step_pre(d_, x, w(P_ROUTER_W), w(P_ROUTER_B), w(P_ROUTER_LOG_TEMP), w(P_REFLEX_NORM), w(P_ATTN_NORM),
                    cfg_.params.norm_eps, w(P_REFLEX_CONV), cfg_.conv_kernel, static_cast<bf16*>(call.conv_cache),
                    call.slot, call.pos, n, D, call.max_len, c, a, routed, qpos, qcnt, row_cache);

    // 2. Reflexive stream: act = swiglu(c Wg^T, c Wu^T); res = x + act Wd^T, out = bf16(res).
    SkinnyEpilogue e;
    e.mode = SKINNY_SWIGLU;
    e.ldy = F;
    e.y_bf16 = act;
    skinny_gemm(d_, n, F, D, c, D, nullptr, w(P_REFLEX_GATE), w(P_REFLEX_UP), e, T.gemm);
    e = SkinnyEpilogue{};
    e.mode = SKINNY_RESIDUAL;
    e.ldy = D;
    e.y_f32 = res;
    e.y_bf16 = out;
    e.residual = x;
    e.ld_residual = D;
    skinny_gemm(d_, n, D, F, act, F, nullptr, w(P_REFLEX_DOWN), nullptr, e, T.gemm);

    // 3. Contextual stream: K (RoPE below) and V (into its cache row) of every row; Q of routed rows.
    e = SkinnyEpilogue{};
    e.mode = SKINNY_KV;
    e.ldy = KV;
    e.y_f32 = kf;
    e.row_cache = row_cache;
    e.cache = v_cache;
    skinny_gemm(d_, n, KV, D, a, D, nullptr, w(P_ATTN_K), w(P_ATTN_V), e, T.gemm);
    e = SkinnyEpilogue{};
    e.mode = SKINNY_F32;
    e.ldy = D;
    e.y_f32 = qf;
    e.gate = routed;
    skinny_gemm(d_, n, D, D, a, D, nullptr, w(P_ATTN_Q), nullptr, e, T.gemm);
    rope_step(d_, kf, qf, call.slot, call.pos, routed, row_cache, n, H, Hkv, Dh, cfg_.params.rope_base, k_cache,
              T.q.as<bf16>());
    if (sqdk_attention_decode_fits(H, Hkv, Dh))
        sqdk_attention_decode(d_, call.max_seqs, call.max_len, H, Hkv, Dh, T.q.as<bf16>(), qpos, qcnt, k_cache, v_cache,
                              T.attn.as<bf16>(), T.lse.as<float>(), T.attention);
    else
        sqdk_attention_forward(d_, AttentionShape{call.max_seqs, 1, call.max_len, H, Hkv, Dh}, T.q.as<bf16>(), qpos,
                               qcnt, k_cache, v_cache, T.attn.as<bf16>(), T.lse.as<float>());

    // 4. out = res + y o on the routed rows (y = 1 in value); the query counts back to 0.
    e = SkinnyEpilogue{};
    e.mode = SKINNY_SCATTER;
    e.ldy = D;
    e.y_bf16 = out;
    e.residual_f32 = res;
    e.gate = routed;
    e.reset_slots = call.slot;
    e.reset_counts = qcnt;
    skinny_gemm(d_, n, D, D, T.attn.as<bf16>(), D, call.slot, w(P_ATTN_O), nullptr, e, T.gemm);
}

}  // namespace hspmn::cuda::detail
