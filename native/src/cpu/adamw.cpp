#include <cmath>

#include "../core/bf16.h"
#include "ops.h"

namespace hspmn::cpu {

void adamw_update(ThreadPool& pool, float* master, uint16_t* value, const float* grad, float* m, float* v, int64_t n,
                  float lr, float weight_decay, float beta1, float beta2, float eps, float bias1, float bias2_sqrt,
                  float grad_scale) {
    const float decay = 1.0f - lr * weight_decay;
    const float step_size = lr / bias1;
    const float one_b1 = 1.0f - beta1, one_b2 = 1.0f - beta2;
    pool.parallel_for(n, 1 << 14, [&](int64_t i0, int64_t i1, int) {
        for (int64_t i = i0; i < i1; ++i) {
            const float g = grad[i] * grad_scale;
            float p = master[i];
            if (weight_decay != 0.0f) p *= decay;
            const float mi = beta1 * m[i] + one_b1 * g;
            const float vi = beta2 * v[i] + one_b2 * g * g;
            p -= step_size * mi / (std::sqrt(vi) / bias2_sqrt + eps);
            m[i] = mi;
            v[i] = vi;
            master[i] = p;
            value[i] = f32_to_bf16(p);
        }
    });
}

}  // namespace hspmn::cpu
