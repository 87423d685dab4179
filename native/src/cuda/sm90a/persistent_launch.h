// Host side of the persistent sm_90a kernels (swiglu_gemm_wgmma.cu, down_residual_wgmma.cu): one CTA,
// or one CTA pair, per SM that can hold it, never more than there are units of work.
#pragma once

#include <cuda_runtime.h>

namespace hspmn::cuda::sm90a {

// Launches kernel<<<...>>>(args...) with `threads` threads and `smem` bytes of dynamic shared memory per
// CTA, in clusters of `cluster` CTAs (1 or 2) over `units` units of work (a unit: one tile per CTA of a
// cluster). pairs_fit caches how many pairs fit at once (asked when 0; -1: none does, e.g. on a
// partitioned GPU). Sets *no_pairs and launches nothing when cluster is 2 and no pair fits: the caller
// then launches its single-CTA variant.
template <class Kernel, class... Args>
cudaError_t launch_persistent(Kernel kernel, int cluster, int units, int threads, int smem, cudaStream_t stream,
                              int sm_count, int& pairs_fit, bool* no_pairs, Args... args) {
    *no_pairs = false;
    // The attribute is per function and process-wide; setting it again is cheap and thread-safe.
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e != cudaSuccess) return e;
    cudaLaunchConfig_t cfg = {};
    cfg.blockDim = dim3(threads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = cluster;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    int clusters = sm_count / cluster;
    if (cluster > 1) {
        if (pairs_fit == 0) {  // once per device: the kernels share block size and shared memory
            cfg.gridDim = dim3(clusters * cluster);
            e = cudaOccupancyMaxActiveClusters(&pairs_fit, kernel, &cfg);
            if (e != cudaSuccess || pairs_fit < 1) {
                (void)cudaGetLastError();
                pairs_fit = -1;
            }
        }
        if (pairs_fit < 1) {
            *no_pairs = true;
            return cudaSuccess;
        }
        clusters = pairs_fit;
    }
    cfg.gridDim = dim3((units < clusters ? units : clusters) * cluster);
    return cudaLaunchKernelEx(&cfg, kernel, args...);
}

}  // namespace hspmn::cuda::sm90a
