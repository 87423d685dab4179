#include "cublaslt.h"
#include "runtime.h"

#include <dlfcn.h>

#include <cstdlib>
#include <string>

#include "../core/dynlib.h"
#include "../core/error.h"

namespace hspmn::cuda {
namespace {

#define HSPMN_STR2(x) #x
#define HSPMN_STR(x) HSPMN_STR2(x)
// The soname matching the headers we compiled against (ABI changes only with the major version).
constexpr const char* kSoname = "libcublasLt.so." HSPMN_STR(CUBLAS_VER_MAJOR);

void* open_library(std::string& tried) {
    const char* env = std::getenv("HSPMN_CUBLASLT");
    return dlopen_first({env ? env : "", kSoname, "/usr/local/cuda/lib64/libcublasLt.so." HSPMN_STR(CUBLAS_VER_MAJOR),
                         "/usr/local/cuda/targets/x86_64-linux/lib/libcublasLt.so." HSPMN_STR(CUBLAS_VER_MAJOR)},
                        &tried, nullptr);
}

template <class Fn>
void sym(void* lib, Fn& fn, const char* name) {
    dlerror();
    void* p = dlsym(lib, name);
    if (!p) {
        const char* err = dlerror();
        fail(HSPMN_ERR_NO_DEVICE, "cuBLASLt: %s", err ? err : name);
    }
    fn = reinterpret_cast<Fn>(p);
}

CublasLt load() {
    std::string tried;
    void* lib = open_library(tried);
    if (!lib)
        fail(HSPMN_ERR_NO_DEVICE,
             "cuBLASLt not found (%s); install the CUDA toolkit's cuBLAS or the nvidia-cublas wheel and put "
             "%s on LD_LIBRARY_PATH, or set HSPMN_CUBLASLT to its path",
             tried.c_str(), kSoname);
    // Never dlclose'd: the table lives as long as the process.
    CublasLt t{};
    sym(lib, t.create, "cublasLtCreate");
    sym(lib, t.destroy, "cublasLtDestroy");
    sym(lib, t.get_version, "cublasLtGetVersion");
    sym(lib, t.status_string, "cublasLtGetStatusString");
    sym(lib, t.matmul_desc_create, "cublasLtMatmulDescCreate");
    sym(lib, t.matmul_desc_destroy, "cublasLtMatmulDescDestroy");
    sym(lib, t.matmul_desc_set_attribute, "cublasLtMatmulDescSetAttribute");
    sym(lib, t.layout_create, "cublasLtMatrixLayoutCreate");
    sym(lib, t.layout_destroy, "cublasLtMatrixLayoutDestroy");
    sym(lib, t.preference_create, "cublasLtMatmulPreferenceCreate");
    sym(lib, t.preference_destroy, "cublasLtMatmulPreferenceDestroy");
    sym(lib, t.preference_set_attribute, "cublasLtMatmulPreferenceSetAttribute");
    sym(lib, t.algo_get_heuristic, "cublasLtMatmulAlgoGetHeuristic");
    sym(lib, t.matmul, "cublasLtMatmul");
    std::size_t version = t.get_version();
    if (version / 10000 != CUBLAS_VER_MAJOR)
        fail(HSPMN_ERR_NO_DEVICE, "cuBLASLt %zu loaded, but libhspmn was built against major version %d", version,
             CUBLAS_VER_MAJOR);
    return t;
}

}  // namespace

const CublasLt& cublaslt() { return load_once(load); }

void check_lt(cublasStatus_t s, const char* what) {
    if (s == CUBLAS_STATUS_SUCCESS) return;
    // cuBLAS reports a corrupt context as a plain execution failure; the runtime names the cause.
    cudaError_t e = cudaPeekAtLastError();
    fail_status(is_sticky_error(e), s == CUBLAS_STATUS_ALLOC_FAILED,
                format("%s: %s (cublasStatus %d)", what, cublaslt().status_string(s), static_cast<int>(s)).c_str(),
                cudaGetErrorName(e));
}

}  // namespace hspmn::cuda
