// adamw_update: one fused pass over a parameter's float32 master weight, moments and gradient, in
// hspmn_lm.adamw_update's order (torch's mul_, add_, addcmul_, addcdiv_ on f32 tensors). Every step
// is an explicitly rounded f32 operation (no contraction into FMAs), so the result is the IEEE
// float32 evaluation of that formula, element by element, whatever the compiler flags.
#include "common.cuh"
#include "kernels.h"

namespace hspmn::cuda {

namespace {

// The per-step constants, formed once on the host in double from AdamwScalars and rounded to f32,
// as torch rounds a Python scalar to the tensor's f32 opmath.
struct AdamwConsts {
    float decay;       // 1 - lr * wd
    float beta1, one_minus_beta1, beta2, one_minus_beta2;
    float bias2_sqrt, eps;
    float neg_step;    // -(lr / bias1)
    float grad_scale;
    bool decayed;
};

// master, m, v: [n] f32 (updated)  value: [n] bf16 = bf16(master), round to nearest even  grad: [n] f32
__global__ void adamw_update_kernel(float* __restrict__ master, __nv_bfloat16* __restrict__ value,
                                    const float* __restrict__ grad, float* __restrict__ m, float* __restrict__ v,
                                    int64_t n, AdamwConsts k) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float g = __fmul_rn(grad[i], k.grad_scale);
        float p = master[i];
        if (k.decayed) p = __fmul_rn(p, k.decay);
        const float mi = __fadd_rn(__fmul_rn(m[i], k.beta1), __fmul_rn(g, k.one_minus_beta1));
        // addcmul / addcdiv evaluate value * t1 * t2 and value * t1 / t2 left to right
        const float vi = __fadd_rn(__fmul_rn(v[i], k.beta2), __fmul_rn(__fmul_rn(k.one_minus_beta2, g), g));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), k.bias2_sqrt), k.eps);
        p = __fadd_rn(p, __fdiv_rn(__fmul_rn(k.neg_step, mi), denom));
        m[i] = mi;
        v[i] = vi;
        master[i] = p;
        value[i] = __float2bfloat16_rn(p);
    }
}

}  // namespace

void adamw_update(Device& d, float* master, __nv_bfloat16* value, const float* grad, float* m, float* v, int64_t n,
                  const AdamwScalars& s) {
    if (n <= 0) return;
    AdamwConsts k;
    k.decayed = s.weight_decay != 0.0f;
    k.decay = static_cast<float>(1.0 - static_cast<double>(s.lr) * static_cast<double>(s.weight_decay));
    k.beta1 = s.beta1;
    k.one_minus_beta1 = static_cast<float>(1.0 - static_cast<double>(s.beta1));
    k.beta2 = s.beta2;
    k.one_minus_beta2 = static_cast<float>(1.0 - static_cast<double>(s.beta2));
    k.bias2_sqrt = s.bias2_sqrt;
    k.eps = s.eps;
    k.neg_step = static_cast<float>(-(static_cast<double>(s.lr) / static_cast<double>(s.bias1)));
    k.grad_scale = s.grad_scale;
    adamw_update_kernel<<<kern::grid_for(n, 256), 256, 0, stream(d)>>>(master, value, grad, m, v, n, k);
    check_launch("adamw_update");
}

}  // namespace hspmn::cuda
