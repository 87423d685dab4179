// The CUDA backend's slot in a CPU-only build (cuda_ops.cpp replaces this file under HSPMN_WITH_CUDA).
#include "backend_ops.h"

namespace hspmn::backend_ops {

OpBackend cuda_backend(std::string& why) {
    why = "not built (configure with -DHSPMN_CUDA=ON)";
    return OpBackend{"cuda", nullptr};
}

}  // namespace hspmn::backend_ops
