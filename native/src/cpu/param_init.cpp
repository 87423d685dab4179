#include "param_init.h"

#include <cmath>

#include "../core/splitmix.h"

namespace hspmn::cpu {

namespace {

void uniform(uint64_t seed, int index, double bound, float* dst, int64_t n) {
    // One stream per parameter so adding a parameter later does not reshuffle the others.
    uint64_t state = seed ^ (0xA0761D6478BD642Full * static_cast<uint64_t>(index + 1));
    for (int64_t i = 0; i < n; ++i) {
        const double u = splitmix_unit(state);
        dst[i] = static_cast<float>((2.0 * u - 1.0) * bound);
    }
}

}  // namespace

void init_param(const BlockConfig& cfg, int index, uint64_t seed, float* dst) {
    const ParamInfo info = param_table(cfg)[index];
    switch (index) {
        case P_ROUTER_B: {
            // logit(rho) so threshold routing starts near rho; rho = 1 would be +inf, use logit(0.999).
            double rho = std::fmin(static_cast<double>(cfg.params.sparsity_k), 0.999);
            dst[0] = static_cast<float>(std::log(rho / (1.0 - rho)));
            return;
        }
        case P_ROUTER_LOG_TEMP:
            dst[0] = 0.0f;
            return;
        case P_REFLEX_NORM:
        case P_ATTN_NORM:
            for (int64_t i = 0; i < info.numel; ++i) dst[i] = 1.0f;
            return;
        case P_REFLEX_CONV:
            uniform(seed, index, 1.0 / std::sqrt(static_cast<double>(cfg.conv_kernel)), dst, info.numel);
            return;
        default:
            // router.w and every linear weight [out, in]: fan_in = in = the last extent.
            uniform(seed, index, 1.0 / std::sqrt(static_cast<double>(info.ndim == 2 ? info.shape[1] : info.shape[0])),
                    dst, info.numel);
            return;
    }
}

}  // namespace hspmn::cpu
