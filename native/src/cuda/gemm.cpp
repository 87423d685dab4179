// runtime.h's gemm through cuBLASLt. cuBLASLt is column-major; a row-major X [r, c] with row
// stride ld is the column-major X^T [c, r] with the same ld, so C = op(A) op(B) is computed as
// C^T = op(B)^T op(A)^T: B goes in cuBLASLt's A slot and A in its B slot, each with its own flag.
#include <cstring>
#include <map>
#include <tuple>

#include "../core/error.h"
#include "device.h"

namespace hspmn::cuda {

namespace {

// Everything the descriptors and the heuristic's answer depend on; pointer alignment included,
// because an algorithm picked for 256-byte aligned operands may not run on an offset view.
struct PlanKey {
    bool trans_a, trans_b;
    int64_t M, N, K, lda, ldb, ldc;
    int c_type;
    int align_a, align_b, align_c;
    bool accumulate;
    bool operator<(const PlanKey& o) const {
        return std::tie(trans_a, trans_b, M, N, K, lda, ldb, ldc, c_type, align_a, align_b, align_c, accumulate) <
               std::tie(o.trans_a, o.trans_b, o.M, o.N, o.K, o.lda, o.ldb, o.ldc, o.c_type, o.align_a, o.align_b,
                        o.align_c, o.accumulate);
    }
};

struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    std::size_t workspace = 0;
};

int alignment(const void* p) {
    auto v = reinterpret_cast<std::uintptr_t>(p);
    int a = 256;
    while (a > 1 && v % static_cast<std::uintptr_t>(a) != 0) a /= 2;
    return a;
}

void destroy(const CublasLt& lt, Plan& p) noexcept {
    if (p.op) lt.matmul_desc_destroy(p.op);
    if (p.a) lt.layout_destroy(p.a);
    if (p.b) lt.layout_destroy(p.b);
    if (p.c) lt.layout_destroy(p.c);
    p = Plan{};
}

// Builds the descriptors and asks the heuristic once; throws with everything it made destroyed.
Plan make_plan(Device& d, const PlanKey& k) {
    const CublasLt& lt = *d.lt;
    Plan p;
    cublasLtMatmulPreference_t pref = nullptr;
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

        cublasLtMatmulHeuristicResult_t result{};
        int found = 0;
        check_lt(lt.algo_get_heuristic(d.lt_handle, p.op, p.a, p.b, p.c, p.c, pref, 1, &result, &found),
                 "cublasLtMatmulAlgoGetHeuristic");
        if (found == 0 || result.state != CUBLAS_STATUS_SUCCESS)
            fail(HSPMN_ERR_BACKEND,
                 "cuBLASLt has no algorithm for C[%lld, %lld] = op(A) op(B), K %lld, trans %d/%d, ld %lld/%lld/%lld, "
                 "C %s",
                 static_cast<long long>(k.M), static_cast<long long>(k.N), static_cast<long long>(k.K), k.trans_a,
                 k.trans_b, static_cast<long long>(k.lda), static_cast<long long>(k.ldb),
                 static_cast<long long>(k.ldc), k.c_type == static_cast<int>(DType::BF16) ? "bf16" : "f32");
        p.algo = result.algo;
        p.workspace = result.workspaceSize;
        lt.preference_destroy(pref);
    } catch (...) {
        if (pref) lt.preference_destroy(pref);
        destroy(lt, p);
        throw;
    }
    return p;
}

}  // namespace

struct GemmPlans : Tracked {
    std::map<PlanKey, Plan, std::less<PlanKey>, TrackedAllocator<std::pair<const PlanKey, Plan>>> plans;
};

void destroy_gemm_plans(Device& d) noexcept {
    if (!d.gemm_plans) return;
    for (auto& kv : d.gemm_plans->plans) destroy(*d.lt, kv.second);
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
    PlanKey key{trans_a, trans_b, M, N, K, lda, ldb, ldc, static_cast<int>(c_type), alignment(A), alignment(B),
                alignment(C), beta != 0.0f};
    const Plan* plan = nullptr;
    {
        std::lock_guard<std::mutex> lock(d.gemm_mutex);
        if (!d.gemm_plans) d.gemm_plans = new GemmPlans();
        auto it = d.gemm_plans->plans.find(key);
        if (it == d.gemm_plans->plans.end()) {
            Plan p = make_plan(d, key);
            try {
                it = d.gemm_plans->plans.emplace(key, p).first;
            } catch (...) {
                destroy(*d.lt, p);
                throw;
            }
        }
        plan = &it->second;  // map nodes never move; plans are only erased with the device
    }
    check_lt(d.lt->matmul(d.lt_handle, plan->op, &alpha, B, plan->a, A, plan->b, &beta, C, plan->c, C, plan->c,
                          &plan->algo, d.workspace.data(), d.workspace.bytes(), d.stream),
             "cublasLtMatmul");
}

}  // namespace hspmn::cuda
