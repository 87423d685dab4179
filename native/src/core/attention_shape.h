// The one selected-rows layout of sqdk_attention, taken by every backend's op (src/cpu/ops.h,
// src/cuda/runtime.h), so one backend's op is the other's oracle (native/tests/backend_ops/).
// Queries are the selected rows of B sequences, padded to C per sequence (native/kernels/triton/README.md):
//   q, o:   [B, C, H*Dh]    row (b, j) is valid iff j < counts[b]
//   pos:    [B, C]     i32  absolute position of each valid query, increasing; -1 (never read) past counts
//   counts: [B]        i32  in the backend's internal memory (the CUDA kernels read it on the device)
//   k, v:   [B, S, Hkv*Dh]  every token (RoPE applied to k)
//   lse:    [B, H, C]  f32  natural log-sum-exp of the scaled scores
// Query head h reads kv head h / (H / Hkv); scale 1/sqrt(Dh); a query at position p sees keys 0..p.
// Rows past counts[b] are written as 0 in o, lse and dq. Backward overwrites dq, dk, dv.
#pragma once

#include <cstdint>

namespace hspmn {

struct AttentionShape {
    int64_t B, C, S, H, Hkv, Dh;
};

}  // namespace hspmn
