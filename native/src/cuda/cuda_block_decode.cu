// CudaBlock::decode: cached decoding on the GPU (the CPU's is cpu_block_decode.cpp).
#include "cuda_block_impl.h"

namespace hspmn::cuda::detail {

// ---- cached decoding (core/backend.h DecodeCall, MODEL.md "Decoding with a cache") ----
//
// For its rows, decode runs the forward's rows pass (run_rows, cuda_block_rows.cu) after
// router_forward without noise: the causal conv's arithmetic over [the slot's conv cache, the new
// rows], the same GEMMs, swiglu, rope_forward from rows of the same table values (decode_rows writes
// the call's rows of it), sqdk_attention over the caches and gate_scatter. Only the GEMMs' M differs
// from the full forward (cuBLASLt may pick another algorithm for another M), so the outputs agree to
// float32 summation order, not bit for bit. Its scratch is the rows arena's, sized by the call's rows:
// a prefill in chunks of T tokens needs O(T) scratch whatever max_len is.
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
    const int64_t D = cfg_.D, H = cfg_.H;
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
    DecodeScratch& X = dec_;

    // ---- the call's shape on the host: query capacity C, runs, query block of each sequence
    int64_t C = 0;
    for (int64_t j = 0; j < seqs; ++j) C = std::max(C, call.row_start[j + 1] - call.row_start[j]);
    X.order.resize(static_cast<std::size_t>(seqs));
    for (int64_t j = 0; j < seqs; ++j) X.order[j] = j;
    std::sort(X.order.begin(), X.order.end(), [&](int64_t a, int64_t b) { return call.slot[a] < call.slot[b]; });
    X.runs.clear();
    const int64_t meta_count = (seqs + 1) + 3 * seqs;
    int32_t* h_row_start = X.upload.begin(d_, meta_count);
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
    for (int64_t j = 0; j <= seqs; ++j) h_row_start[j] = static_cast<int32_t>(call.row_start[j]);
    for (int64_t j = 0; j < seqs; ++j) {
        h_slot[j] = call.slot[j];
        h_pos0[j] = static_cast<int32_t>(call.pos0[j]);
    }
    int32_t* meta = grow<int32_t>(d_, X.meta, meta_count);
    X.upload.send(d_, meta, meta_count);
    const DecodeMeta m{meta, meta + seqs + 1, meta + seqs + 1 + seqs, meta + seqs + 1 + 2 * seqs,
                       static_cast<int32_t>(seqs)};

    // The call's scratch, in the rows arena: bounded by its rows (n) and query slots (blocks * C).
    const int64_t Q = blocks * C, half = cfg_.Dh / 2;
    float *l = nullptr, *nsc = nullptr, *temp = nullptr, *cos_rows = nullptr, *sin_rows = nullptr;
    int32_t *qpos = nullptr, *qrow = nullptr, *qcnt = nullptr, *row_pos = nullptr;
    int64_t* row_cache = nullptr;
    RowsBuffers buf{};
    carve_arena(d_, [&](Carve& cv) {
        l = cv.take<float>(n);
        nsc = cv.take<float>(n);
        temp = cv.take<float>(2);
        qpos = cv.take<int32_t>(Q);
        qrow = cv.take<int32_t>(Q);
        qcnt = cv.take<int32_t>(blocks);
        row_pos = cv.take<int32_t>(n);
        row_cache = cv.take<int64_t>(n);
        cos_rows = cv.take<float>(n * half);
        sin_rows = cv.take<float>(n * half);
        buf = carve_rows(cv, n, Q);
    });

    // 1. Router (n = l / t, no noise), the query lists of the selected rows, each row's position,
    // cache row and rope table row.
    const bf16* x = reinterpret_cast<const bf16*>(call.x);
    router_forward(d_, x, w(P_ROUTER_W), w(P_ROUTER_B), w(P_ROUTER_LOG_TEMP), nullptr, n, D, l, nsc, temp);
    check(cudaMemsetAsync(qcnt, 0, static_cast<std::size_t>(blocks) * 4, stream(d_)), "cudaMemsetAsync (decode counts)");
    decode_select(d_, nsc, m, C, qpos, qrow, qcnt, call.routed);
    decode_rows(d_, m, n, max_len, cfg_.Dh, cfg_.params.rope_base, row_pos, row_cache, cos_rows, sin_rows);

    // 2. The rows pass: the conv continues each slot's conv cache, K/V go to the caches (before the
    // attention, so a prefill attends its own earlier rows), queries are the selected rows (S = 0:
    // qrow holds rows of the call directly), one attention launch per run of slots.
    RowsPass p;
    p.n = n;
    p.x = x;
    p.out = reinterpret_cast<bf16*>(call.out);
    p.meta = &m;
    p.conv_cache = static_cast<bf16*>(call.conv_cache);
    p.cos_t = cos_rows;
    p.sin_t = sin_rows;
    p.key_S = n;
    p.kv_row = row_cache;
    p.k_cache = static_cast<bf16*>(call.k_cache);
    p.v_cache = static_cast<bf16*>(call.v_cache);
    p.blocks = blocks;
    p.C = C;
    p.q_row_S = 0;
    p.q_rows = p.q_tab = qrow;
    p.q_pos = qpos;
    p.q_cnt = qcnt;
    p.runs = X.runs.data();
    p.run_count = static_cast<int64_t>(X.runs.size());
    p.att_S = max_len;
    run_rows(p, buf);
}

}  // namespace hspmn::cuda::detail
