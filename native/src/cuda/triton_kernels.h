// The AOT-compiled Triton kernels embedded in libhspmn: cubins and launch metadata, generated at
// build time by cmake/embed_triton.py from native/kernels/triton/aot_compile.py's output (the
// JSON is parsed there, so the library carries no JSON reader).
#pragma once

#include <cstddef>
#include <cstdint>

namespace hspmn::cuda {

// One kernel parameter in the order of the CUDA parameter buffer; `name` is the Triton argument
// name (Q, K, ..., C, S, H, HKV, HEAD_DIM; X, WG, ..., N, F, D; global_scratch, profile_scratch),
// `size` 8 (pointer) or 4 (i32).
struct TritonArg {
    const char* name;
    int32_t size;
    int32_t offset;
};

struct TritonKernel {
    const char* kernel;  // sqdk_attention_fwd, sqdk_attention_bwd_preprocess, ..._dkdv, ..._dq, swiglu_gemm_infer, ..._train
    const char* symbol;  // the cubin's entry point
    int32_t arch;        // compute capability as major*10+minor the cubin runs on
    // Head dims served: head_dim_min..head_dim_max in steps of head_dim_step. An exact variant
    // (HEAD_DIM compiled in, no column mask) serves one; a padded one takes HEAD_DIM as an argument
    // and serves the rest of its tile width (native/kernels/triton/README.md); exact ones win.
    // Kernels without a head dim (swiglu_gemm) have 0, 0, 1.
    int32_t head_dim_min;
    int32_t head_dim_max;
    int32_t head_dim_step;
    const unsigned char* cubin;
    std::size_t cubin_size;
    int32_t block_x;       // threads per program (num_warps * 32)
    int32_t shared_bytes;  // dynamic shared memory per program
    // grid = (cdiv(grid_x_extent, grid_x_tile), B * (grid_y_kv_heads ? Hkv : H), 1), or for
    // grid_x_extent 'P' (persistent: swiglu_gemm) one program per SM, (sm_count, 1, 1)
    char grid_x_extent;  // 'C' (query slots), 'S' (tokens), 'G' (C * H / Hkv: slot and head pairs) or 'P'

    int32_t grid_x_tile;
    int32_t grid_y_kv_heads;
    const TritonArg* args;
    int32_t num_args;
    int64_t global_scratch_size;  // bytes per program; 0: pass NULL
    int64_t global_scratch_align;
    int64_t profile_scratch_size;  // bytes per program; 0: pass NULL
};

extern const TritonKernel kTritonKernels[];
extern const int kTritonKernelCount;

}  // namespace hspmn::cuda
