// CudaBlock::forward_chunked: an inference forward of more rows than one pass (core/forward_chunk.h)
// in bounded memory. The CPU's is cpu_block_chunked.cpp; the steps are the same:
//
//   1. The router over every row at once (l, n: [B*S] f32; x is read in place, or staged a chunk at
//      a time when it is not device memory).
//   2. The selection over whole sequences, as the one-pass forward: the pins, or route_select (top-k
//      needs every score of a sequence before any chunk runs).
//   3. The rows, chunk by chunk, through run_rows. When a sequence fits one pass (S <= whole_rows), a
//      chunk is whole_rows / S whole sequences and runs as the one-pass forward of that sub-batch.
//      Else each sequence runs in chunks of split_rows consecutive rows, as decode runs a prefill
//      into one cache slot of S rows:
//      chunk_select cuts the chunk's part out of the sequence's selection (on the device: no host
//      sync, so the forward can be captured as a graph), decode_rows gives its rows' positions and
//      rope table rows, the conv continues from the previous chunk's last K-1 inputs, and K, V of the
//      sequence so far stay in [S, Hkv*Dh] bf16 caches that the chunk's queries attend.
//
// Equal to the one-pass forward up to float32 summation order: the router, the selection, the conv,
// RoPE and the attention see the same values in the same arithmetic; only the GEMMs see M = the
// chunk's rows, for which cuBLASLt may pick another algorithm.
//
// Memory, all in the rows arena (shared by the context's blocks): l, n and the selection (12 bytes
// per token), K/V of one sequence (4 Hkv*Dh bytes per position), one chunk's rows scratch
// (chunk_row_bytes per row) and, for x / out that are not 16-byte aligned device memory at every
// chunk, 2 D bytes per row of staging each.
#include "cuda_block_impl.h"

namespace hspmn::cuda::detail {

void CudaBlock::forward_chunked(const ForwardCall& call, const ForwardChunks& chunks) {
    const int64_t B = call.x->shape[0], S = call.x->shape[1], N = B * S;
    const int64_t D = cfg_.D, Hkv = cfg_.Hkv, Dh = cfg_.Dh, KV = Hkv * Dh, P = cfg_.conv_kernel - 1;
    const bool whole = S <= chunks.whole_rows;
    const int64_t g = whole ? std::min(chunks.whole_rows / S, B) : 1;  // sequences per chunk
    const int64_t R = chunks.split_rows;
    const int64_t C = call.indices ? call.indices->shape[1] : routing_k(S);
    const int64_t chunk_rows = whole ? g * S : R, chunk_q = whole ? g * C : R;
    const bf16* xd = on_device(call.x) ? static_cast<const bf16*>(call.x->data) : nullptr;
    bf16* od = on_device(call.out) ? static_cast<bf16*>(call.out->data) : nullptr;
    // In place when device memory whose every chunk starts 16-byte aligned (the vector kernels), else
    // through staging.
    const bool stage_x = !xd || D % 8 != 0 || !aligned16(xd);
    const bool stage_out = !od || D % 8 != 0 || !aligned16(od);

    float *l = nullptr, *nsc = nullptr, *temp = nullptr, *cos_rows = nullptr, *sin_rows = nullptr;
    int32_t *idx = nullptr, *cnt = nullptr, *gidx = nullptr, *gcnt = nullptr;
    char* sel = nullptr;
    int32_t *meta = nullptr, *qpos = nullptr, *qrow = nullptr, *qcnt = nullptr, *row_pos = nullptr;
    int64_t* row_cache = nullptr;
    bf16 *k_cache = nullptr, *v_cache = nullptr, *conv = nullptr, *xs = nullptr, *os = nullptr;
    RowsBuffers buf{};
    const bool fused_mlp = fused_mlp_inference();  // once: the sizing and the placing pass must agree
    carve_arena(d_, [&](Carve& cv) {
        l = cv.take<float>(N);
        nsc = cv.take<float>(N);
        temp = cv.take<float>(2);
        idx = cv.take<int32_t>(B * C);
        cnt = cv.take<int32_t>(B);
        sel = cv.take<char>(route_select_scratch_bytes(B, S));
        if (whole) {
            gidx = cv.take<int32_t>(g * C);
            gcnt = cv.take<int32_t>(g);
        } else {
            k_cache = cv.take<bf16>(S * KV);
            v_cache = cv.take<bf16>(S * KV);
            conv = cv.take<bf16>(std::max<int64_t>(P, 1) * D);
            meta = cv.take<int32_t>(5);
            qpos = cv.take<int32_t>(R);
            qrow = cv.take<int32_t>(R);
            qcnt = cv.take<int32_t>(1);
            row_pos = cv.take<int32_t>(R);
            row_cache = cv.take<int64_t>(R);
            cos_rows = cv.take<float>(R * (Dh / 2));
            sin_rows = cv.take<float>(R * (Dh / 2));
        }
        if (stage_x) xs = cv.take<bf16>(chunk_rows * D);
        if (stage_out) os = cv.take<bf16>(chunk_rows * D);
        buf = carve_rows(cv, chunk_rows, chunk_q, fused_mlp);
    });
    const char* x_bytes = static_cast<const char*>(call.x->data);
    char* out_bytes = static_cast<char*>(call.out->data);
    auto in_rows = [&](int64_t r0, int64_t rows) -> const bf16* {
        if (!stage_x) return xd + r0 * D;
        copy_async(d_, xs, x_bytes + r0 * D * 2, rows * D * 2, "cudaMemcpyAsync (x chunk)");
        return xs;
    };
    auto out_rows = [&](int64_t r0) { return stage_out ? os : od + r0 * D; };
    auto out_done = [&](int64_t r0, int64_t rows) {
        if (stage_out) copy_async(d_, out_bytes + r0 * D * 2, os, rows * D * 2, "cudaMemcpyAsync (out chunk)");
    };

    // 1. Router (inference: no noise).
    if (!stage_x) {
        router_forward(d_, xd, w(P_ROUTER_W), w(P_ROUTER_B), w(P_ROUTER_LOG_TEMP), nullptr, N, D, l, nsc, temp);
    } else {
        for (int64_t r0 = 0; r0 < N; r0 += chunk_rows) {
            const int64_t rows = std::min(chunk_rows, N - r0);
            router_forward(d_, in_rows(r0, rows), w(P_ROUTER_W), w(P_ROUTER_B), w(P_ROUTER_LOG_TEMP), nullptr, rows, D,
                           l + r0, nsc + r0, temp);
        }
    }

    // 2. Selection over whole sequences.
    if (call.indices) {
        copy_async(d_, idx, call.indices->data, B * C * 4, "cudaMemcpyAsync (indices)");
        copy_async(d_, cnt, call.counts->data, B * 4, "cudaMemcpyAsync (counts)");
    } else {
        route_select(d_, nsc, B, S, cfg_.params.routing, C, C, idx, cnt, sel);
    }
    if (call.routed_fraction) routed_fraction(d_, cnt, B, S, call.routed_fraction);
    if (call.noise_free_fraction) noise_free_fraction(d_, l, N, call.noise_free_fraction);

    // 3. The rows.
    if (whole) {
        ensure_rope(S);
        for (int64_t b0 = 0; b0 < B; b0 += g) {
            const int64_t nb = std::min(g, B - b0), rows = nb * S;
            // The sub-batch's lists at aligned addresses (the Triton kernels read Pos and Counts).
            copy_async(d_, gidx, idx + b0 * C, nb * C * 4, "cudaMemcpyAsync (chunk indices)");
            copy_async(d_, gcnt, cnt + b0, nb * 4, "cudaMemcpyAsync (chunk counts)");
            const DecodeRun r{0, nb, 0};
            run_rows(sequences_pass(nb, S, C, in_rows(b0 * S, rows), out_rows(b0 * S), gidx, gcnt, &r), buf);
            out_done(b0 * S, rows);
        }
    } else {
        const DecodeMeta m{meta, meta + 2, meta + 3, meta + 4, 1};
        const DecodeRun run{0, 1, 0};
        for (int64_t b = 0; b < B; ++b) {
            // The conv's zero padding before position 0.
            check(cudaMemsetAsync(conv, 0, static_cast<std::size_t>(std::max<int64_t>(P, 1) * D) * 2, stream(d_)),
                  "cudaMemsetAsync (conv tail)");
            for (int64_t s0 = 0; s0 < S; s0 += R) {
                const int64_t T = std::min(R, S - s0), r0 = b * S + s0;
                chunk_select(d_, idx + b * C, cnt + b, s0, T, meta, qpos, qrow, qcnt);
                decode_rows(d_, m, T, S, Dh, cfg_.params.rope_base, row_pos, row_cache, cos_rows, sin_rows);
                RowsPass p;
                p.n = T;
                p.x = in_rows(r0, T);
                p.out = out_rows(r0);
                p.meta = &m;
                p.conv_cache = conv;
                p.cos_t = cos_rows;
                p.sin_t = sin_rows;
                p.key_S = T;
                p.kv_row = row_cache;
                p.k_cache = k_cache;
                p.v_cache = v_cache;
                p.blocks = 1;
                p.C = T;
                p.q_row_S = 0;
                p.q_rows = p.q_tab = qrow;
                p.q_pos = qpos;
                p.q_cnt = qcnt;
                p.runs = &run;
                p.run_count = 1;
                // The keys written so far: the caches' rows past them hold whatever the arena held (a
                // masked key's score is -inf, but its value still enters P V as 0 * value, NaN for
                // garbage that reads as Inf or NaN); the kernels load keys past att_S as 0.
                p.att_S = s0 + T;
                run_rows(p, buf);
                out_done(r0, T);
            }
        }
    }

    if (call.aux) {
        aux_loss_forward(d_, l, N, call.aux_target, cfg_.params.router_sparsity_coef, cfg_.params.router_entropy_coef,
                         output<float>(d_, call.aux, stage_.aux));
        output_done(d_, call.aux, stage_.aux, "cudaMemcpyAsync (aux)");
    }
    if (any_host({call.x, call.indices, call.counts, call.out, call.aux}))
        sync("cudaStreamSynchronize (forward)");
}

}  // namespace hspmn::cuda::detail
