// cuBLASLt, opened with dlopen on first use instead of linked: libhspmn loads on machines without
// cuBLAS, and a CUDA context on a machine with a GPU but no cuBLAS fails with a status (AUTO then
// falls back to the CPU) instead of the whole library failing to load.
#pragma once

#include <cublasLt.h>

namespace hspmn::cuda {

struct CublasLt {
    decltype(&cublasLtCreate) create;
    decltype(&cublasLtDestroy) destroy;
    decltype(&cublasLtGetVersion) get_version;
    decltype(&cublasLtGetStatusString) status_string;
    decltype(&cublasLtMatmulDescCreate) matmul_desc_create;
    decltype(&cublasLtMatmulDescDestroy) matmul_desc_destroy;
    decltype(&cublasLtMatmulDescSetAttribute) matmul_desc_set_attribute;
    decltype(&cublasLtMatrixLayoutCreate) layout_create;
    decltype(&cublasLtMatrixLayoutDestroy) layout_destroy;
    decltype(&cublasLtMatmulPreferenceCreate) preference_create;
    decltype(&cublasLtMatmulPreferenceDestroy) preference_destroy;
    decltype(&cublasLtMatmulPreferenceSetAttribute) preference_set_attribute;
    decltype(&cublasLtMatmulAlgoGetHeuristic) algo_get_heuristic;
    decltype(&cublasLtMatmul) matmul;
};

// The process-wide table. Looks for libcublasLt.so.<major of the headers> in $HSPMN_CUBLASLT (a
// path), the loader's search path, then the CUDA toolkit's lib64. Throws Error{HSPMN_ERR_NO_DEVICE}
// with dlerror's text when none loads or a symbol is missing.
const CublasLt& cublaslt();

// Throws Error{HSPMN_ERR_BACKEND} naming `what` when s is not CUBLAS_STATUS_SUCCESS.
void check_lt(cublasStatus_t s, const char* what);

}  // namespace hspmn::cuda
