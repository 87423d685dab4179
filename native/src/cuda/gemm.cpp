// runtime.h's gemm through cuBLASLt. cuBLASLt is column-major; a row-major X [r, c] with row
// stride ld is the column-major X^T [c, r] with the same ld, so C = op(A) op(B) is computed as
// C^T = op(B)^T op(A)^T: B goes in cuBLASLt's A slot and A in its B slot, each with its own flag.
// The algorithm per shape: choose() below, gemm_search.h, README.md "GEMM algorithms".
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "../core/error.h"
#include "device.h"
#include "gemm_search.h"

namespace hspmn::cuda {

namespace {

struct Plan {
    GemmDescs descs;
    GemmChoice choice;
    bool settled = false;  // false: chosen during a graph capture without a search; choose again outside one
};

int alignment(const void* p) {
    auto v = reinterpret_cast<std::uintptr_t>(p);
    int a = 256;
    while (a > 1 && v % static_cast<std::uintptr_t>(a) != 0) a /= 2;
    return a;
}

void destroy(const CublasLt& lt, GemmDescs& p) noexcept {
    if (p.op) lt.matmul_desc_destroy(p.op);
    if (p.a) lt.layout_destroy(p.a);
    if (p.b) lt.layout_destroy(p.b);
    if (p.c) lt.layout_destroy(p.c);
    p = GemmDescs{};
}

// Builds the descriptors; throws with everything it made destroyed.
GemmDescs make_descs(const CublasLt& lt, const GemmKey& k) {
    GemmDescs p;
    try {
        const cudaDataType_t c_type = k.c_type == static_cast<int>(DType::BF16) ? CUDA_R_16BF : CUDA_R_32F;
        check_lt(lt.matmul_desc_create(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
        cublasOperation_t op_a = k.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLASLt's A is our B
        cublasOperation_t op_b = k.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
        check_lt(lt.matmul_desc_set_attribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)),
                 "cublasLtMatmulDescSetAttribute(TRANSA)");
        check_lt(lt.matmul_desc_set_attribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)),
                 "cublasLtMatmulDescSetAttribute(TRANSB)");
        // our B as stored: [K, N] row-major = column-major N x K; [N, K] row-major = column-major K x N
        check_lt(lt.layout_create(&p.a, CUDA_R_16BF, k.trans_b ? k.K : k.N, k.trans_b ? k.N : k.K, k.ldb),
                 "cublasLtMatrixLayoutCreate(B)");
        check_lt(lt.layout_create(&p.b, CUDA_R_16BF, k.trans_a ? k.M : k.K, k.trans_a ? k.K : k.M, k.lda),
                 "cublasLtMatrixLayoutCreate(A)");
        check_lt(lt.layout_create(&p.c, c_type, k.N, k.M, k.ldc), "cublasLtMatrixLayoutCreate(C)");
    } catch (...) {
        destroy(lt, p);
        throw;
    }
    return p;
}

// Up to kGemmCandidates answers of the heuristic, best first by its own estimate; never empty (throws).
std::vector<cublasLtMatmulHeuristicResult_t> heuristic(Device& d, const GemmKey& k, const GemmDescs& p) {
    const CublasLt& lt = *d.lt;
    cublasLtMatmulPreference_t pref = nullptr;
    std::vector<cublasLtMatmulHeuristicResult_t> found(kGemmCandidates);
    int count = 0;
    try {
        check_lt(lt.preference_create(&pref), "cublasLtMatmulPreferenceCreate");
        uint64_t ws = Device::kWorkspaceBytes;
        check_lt(lt.preference_set_attribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
                 "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)");
        // Split-K partial sums in float32 only (MODEL.md: matmul accumulators are float32); the
        // in-place and output-type schemes would sum bf16 partials (a full bf16 ulp of error).
        uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
        check_lt(lt.preference_set_attribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes, sizeof(schemes)),
                 "cublasLtMatmulPreferenceSetAttribute(REDUCTION_SCHEME_MASK)");
        uint32_t aa = static_cast<uint32_t>(k.align_b), ab = static_cast<uint32_t>(k.align_a),
                 ac = static_cast<uint32_t>(k.align_c);
        check_lt(lt.preference_set_attribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof(aa)),
                 "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_A_BYTES)");
        check_lt(lt.preference_set_attribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof(ab)),
                 "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_B_BYTES)");
        check_lt(lt.preference_set_attribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof(ac)),
                 "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_C_BYTES)");
        check_lt(lt.preference_set_attribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof(ac)),
                 "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT_D_BYTES)");
        check_lt(lt.algo_get_heuristic(d.lt_handle, p.op, p.a, p.b, p.c, p.c, pref, kGemmCandidates, found.data(),
                                       &count),
                 "cublasLtMatmulAlgoGetHeuristic");
        lt.preference_destroy(pref);
    } catch (...) {
        if (pref) lt.preference_destroy(pref);
        throw;
    }
    std::vector<cublasLtMatmulHeuristicResult_t> ok;
    for (int i = 0; i < count; ++i)
        if (found[i].state == CUBLAS_STATUS_SUCCESS) ok.push_back(found[i]);
    if (ok.empty())
        fail(HSPMN_ERR_BACKEND,
             "cuBLASLt has no algorithm for C[%lld, %lld] = op(A) op(B), K %lld, trans %d/%d, ld %lld/%lld/%lld, "
             "C %s",
             static_cast<long long>(k.M), static_cast<long long>(k.N), static_cast<long long>(k.K), k.trans_a,
             k.trans_b, static_cast<long long>(k.lda), static_cast<long long>(k.ldb),
             static_cast<long long>(k.ldc), k.c_type == static_cast<int>(DType::BF16) ? "bf16" : "f32");
    return ok;
}

GemmChoice first_of(const std::vector<cublasLtMatmulHeuristicResult_t>& c) { return {c[0].algo, c[0].workspaceSize}; }

bool same_algo(const cublasLtMatmulAlgo_t& a, const cublasLtMatmulAlgo_t& b) {
    return std::memcmp(&a, &b, sizeof(a)) == 0;
}

// Whether the stream is being recorded into a graph, where nothing may be timed or waited for. A
// query that fails (another thread's global-mode capture forbids it) answers yes.
bool capturing(const Device& d) {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(d.stream, &status) != cudaSuccess) {
        (void)cudaGetLastError();
        return true;
    }
    return status != cudaStreamCaptureStatusNone;
}

}  // namespace

struct GemmPlans : Tracked {
    std::map<GemmKey, Plan, std::less<GemmKey>, TrackedAllocator<std::pair<const GemmKey, Plan>>> plans;
    std::string device_id;  // gemm_device_id, on the first search
};

namespace {

// The plan's algorithm: the heuristic's first answer when the search is off (or the shape is small);
// else a choice the process already made for this GPU model and shape (another context's, or the
// cache file's when it is still among the heuristic's answers); else the fastest candidate, timed
// now on the call's operands and kept for the process. In a graph capture nothing can be timed: the
// heuristic's first answer serves until a call outside a capture chooses again.
void choose(Device& d, GemmPlans& plans, const GemmKey& k, Plan& p, const GemmOperands& ops) {
    const std::vector<cublasLtMatmulHeuristicResult_t> candidates = heuristic(d, k, p.descs);
    const GemmSearch mode = d.gemm_search >= 0 ? static_cast<GemmSearch>(d.gemm_search) : gemm_search_settings().mode;
    p.choice = first_of(candidates);
    p.settled = true;
    if (mode == GemmSearch::OFF) return;
    if (plans.device_id.empty()) plans.device_id = gemm_device_id(d, *d.lt);
    GemmChoice kept;
    switch (gemm_memo_find(plans.device_id, k, &kept)) {
        case MemoEntry::PROCESS:
            p.choice = kept;
            gemm_count(GemmCount::MEMO_HIT);
            return;
        case MemoEntry::FILE:
            for (const auto& c : candidates)
                if (same_algo(c.algo, kept.algo)) {
                    p.choice = gemm_memo_keep(plans.device_id, k, {c.algo, c.workspaceSize}, false);
                    gemm_count(GemmCount::FILE_HIT);
                    return;
                }
            break;  // stale (another library build or preference): search again
        case MemoEntry::NONE:
            break;
    }
    const double flop = 2.0 * static_cast<double>(k.M) * static_cast<double>(k.N) * static_cast<double>(k.K);
    if (mode == GemmSearch::ON && flop < kGemmSearchMinFlops) return;
    if (capturing(d)) {
        p.settled = false;
        return;
    }
    const int best = candidates.size() > 1 ? gemm_time_candidates(d, k, p.descs, candidates, ops) : 0;
    // Neither is kept for the process. Without memory for the scratch the next call tries again, so a
    // context that ran short (and recovered) chooses as a fresh one does.
    if (best == kGemmNoScratch) p.settled = false;
    if (best < 0) return;
    gemm_count(GemmCount::SEARCHED);
    p.choice = gemm_memo_keep(plans.device_id, k, {candidates[best].algo, candidates[best].workspaceSize}, true);
}

}  // namespace

void destroy_gemm_plans(Device& d) noexcept {
    if (!d.gemm_plans) return;
    for (auto& kv : d.gemm_plans->plans) destroy(*d.lt, kv.second.descs);
    delete d.gemm_plans;
    d.gemm_plans = nullptr;
}

void gemm(Device& d, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const __nv_bfloat16* A, int64_t lda, const __nv_bfloat16* B, int64_t ldb, float beta, void* C,
          DType c_type, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    const std::size_t c_size = c_type == DType::BF16 ? 2 : 4;
    if (K <= 0) {  // op(A) op(B) is zero: C = beta * C
        if (beta == 1.0f) return;
        if (beta != 0.0f) fail(HSPMN_ERR_INTERNAL, "gemm: K = 0 with beta %g is not implemented", beta);
        check(cudaMemset2DAsync(C, static_cast<std::size_t>(ldc) * c_size, 0, static_cast<std::size_t>(N) * c_size,
                                static_cast<std::size_t>(M), d.stream),
              "cudaMemset2DAsync (gemm, K = 0)");
        return;
    }
    GemmKey key{trans_a, trans_b, M, N, K, lda, ldb, ldc, static_cast<int>(c_type), alignment(A), alignment(B),
                alignment(C), beta != 0.0f};
    const Plan* plan = nullptr;
    {
        std::lock_guard<std::mutex> lock(d.gemm_mutex);
        if (!d.gemm_plans) d.gemm_plans = new GemmPlans();
        GemmPlans& plans = *d.gemm_plans;
        const GemmOperands ops{A, B, C, alpha, beta};
        auto it = plans.plans.find(key);
        if (it == plans.plans.end()) {
            Plan p;
            p.descs = make_descs(*d.lt, key);
            try {
                choose(d, plans, key, p, ops);
                it = plans.plans.emplace(key, p).first;
            } catch (...) {
                destroy(*d.lt, p.descs);
                throw;
            }
        } else if (!it->second.settled) {
            choose(d, plans, key, it->second, ops);
        }
        plan = &it->second;  // map nodes never move; plans are only erased with the device
    }
    check_lt(d.lt->matmul(d.lt_handle, plan->descs.op, &alpha, B, plan->descs.a, A, plan->descs.b, &beta, C,
                          plan->descs.c, C, plan->descs.c, &plan->choice.algo, d.workspace.data(),
                          d.workspace.bytes(), d.stream),
             "cublasLtMatmul");
}

}  // namespace hspmn::cuda
