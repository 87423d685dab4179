// Times the heuristic's candidate algorithms of one gemm shape on the call's operands (gemm_search.h).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "../core/error.h"
#include "device.h"
#include "gemm_search.h"

namespace hspmn::cuda {

namespace {

// A candidate must beat an earlier one by this fraction to be chosen: the heuristic's order breaks
// near-ties, which the timing noise of a few launches would otherwise decide.
constexpr double kTieMargin = 0.01;
// Timed launches per candidate: enough for ~2 ms of work, at least 3, at most 20.
constexpr double kTimedMs = 2.0;
constexpr int kMinReps = 3, kMaxReps = 20;

struct Events {
    cudaEvent_t start = nullptr, stop = nullptr;
    Events() {
        check(cudaEventCreate(&start), "cudaEventCreate (gemm search)");
        check(cudaEventCreate(&stop), "cudaEventCreate (gemm search)");
    }
    ~Events() {
        if (start) (void)cudaEventDestroy(start);
        if (stop) (void)cudaEventDestroy(stop);
    }
    Events(const Events&) = delete;
    Events& operator=(const Events&) = delete;
    // Milliseconds between the two records, after waiting for the second.
    float elapsed() const {
        check(cudaEventSynchronize(stop), "cudaEventSynchronize (gemm search)");
        float ms = 0.0f;
        check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime (gemm search)");
        return ms;
    }
};

// False for a launch cuBLASLt refused (the candidate is skipped; its non-sticky error cleared so the next
// kernel's check does not report it); a sticky error throws DEVICE_LOST as check_lt does.
bool launched(cublasStatus_t s) {
    if (s == CUBLAS_STATUS_SUCCESS) return true;
    if (is_sticky_error(cudaPeekAtLastError())) check_lt(s, "cublasLtMatmul (algorithm search)");
    (void)cudaGetLastError();
    gemm_count(GemmCount::FAILED);
    return false;
}

std::string describe(const GemmKey& k) {
    return format("C[%lld, %lld] %s = op(A) op(B), K %lld, trans %d/%d, ld %lld/%lld/%lld, align %d/%d/%d, beta %s",
                  static_cast<long long>(k.M), static_cast<long long>(k.N),
                  k.c_type == static_cast<int>(DType::BF16) ? "bf16" : "f32", static_cast<long long>(k.K),
                  k.trans_a, k.trans_b, static_cast<long long>(k.lda), static_cast<long long>(k.ldb),
                  static_cast<long long>(k.ldc), k.align_a, k.align_b, k.align_c, k.accumulate ? "!= 0" : "0");
}

}  // namespace

int gemm_time_candidates(Device& d, const GemmKey& k, const GemmDescs& descs,
                         const std::vector<cublasLtMatmulHeuristicResult_t>& candidates, const GemmOperands& ops) {
    const bool log = gemm_search_settings().log;
    // With beta == 0 the call overwrites C without reading it, so the candidates may write there too.
    // Otherwise C is read (as the call will) and the results go to a scratch D of C's layout, freed
    // on return: C must still hold what the caller accumulates onto.
    DeviceBuffer scratch;
    void* D = ops.C;
    if (ops.beta != 0.0f) {
        const std::size_t elem = k.c_type == static_cast<int>(DType::BF16) ? 2 : 4;
        const std::size_t bytes = static_cast<std::size_t>((k.M - 1) * k.ldc + k.N) * elem;
        try {
            scratch = DeviceBuffer(d, bytes);
        } catch (const Error& e) {
            if (e.status != HSPMN_ERR_OUT_OF_MEMORY) throw;
            if (log)
                std::fprintf(stderr, "hspmn gemm search: %s: no room for %zu scratch bytes, the heuristic's first "
                                     "until a later call finds room\n",
                             describe(k).c_str(), bytes);
            return kGemmNoScratch;
        }
        D = scratch.data();
    }
    const CublasLt& lt = *d.lt;
    auto launch = [&](const cublasLtMatmulHeuristicResult_t& r) {
        return lt.matmul(d.lt_handle, descs.op, &ops.alpha, ops.B, descs.a, ops.A, descs.b, &ops.beta, ops.C,
                         descs.c, D, descs.c, &r.algo, d.workspace.data(), d.workspace.bytes(), d.stream);
    };
    Events ev;
    const double inf = std::numeric_limits<double>::infinity();
    std::vector<double> ms(candidates.size(), inf);
    for (std::size_t i = 0; i < candidates.size(); ++i) {
        // The warm-up, timed once to size the timed run.
        check(cudaEventRecord(ev.start, d.stream), "cudaEventRecord (gemm search)");
        if (!launched(launch(candidates[i]))) continue;
        check(cudaEventRecord(ev.stop, d.stream), "cudaEventRecord (gemm search)");
        const double warm = ev.elapsed();
        const int reps = warm > 0 ? static_cast<int>(std::fmin(kMaxReps, std::fmax(kMinReps, kTimedMs / warm)))
                                  : kMaxReps;
        check(cudaEventRecord(ev.start, d.stream), "cudaEventRecord (gemm search)");
        bool ok = true;
        for (int r = 0; r < reps && ok; ++r) ok = launched(launch(candidates[i]));
        check(cudaEventRecord(ev.stop, d.stream), "cudaEventRecord (gemm search)");
        const double t = ev.elapsed();
        if (ok) ms[i] = t / reps;
    }
    int best = kGemmNoneRan;
    for (std::size_t i = 0; i < ms.size(); ++i)
        if (ms[i] < inf && (best < 0 || ms[i] < ms[best] * (1.0 - kTieMargin))) best = static_cast<int>(i);
    if (log) {
        const double flop = 2.0 * static_cast<double>(k.M) * static_cast<double>(k.N) * static_cast<double>(k.K);
        std::string line = "hspmn gemm search: " + describe(k) + ":";
        for (std::size_t i = 0; i < ms.size(); ++i)
            line += ms[i] < inf ? format(" #%zu %.4f ms %.1f TFLOP/s;", i, ms[i], flop / ms[i] / 1e9)
                                : format(" #%zu failed;", i);
        line += best < 0 ? std::string(" none ran") : format(" chosen #%d", best);
        if (best > 0 && ms[0] < inf) line += format(" (%.3fx #0)", ms[0] / ms[best]);
        std::fprintf(stderr, "%s\n", line.c_str());
    }
    return best;
}

}  // namespace hspmn::cuda
