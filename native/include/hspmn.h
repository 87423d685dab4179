/*
 * hspmn.h — the whole C ABI of libhspmn: an HSPMN block (router, reflexive conv + SwiGLU stream,
 * sparse-query dense-key attention) on a CPU or CUDA backend. The math is ../shared/design/MODEL.md.
 *
 * Conventions
 *   - Every entry point that can fail returns hspmn_status; on failure hspmn_last_error() gives a
 *     message for the calling thread. Nothing here exits, aborts or throws across the boundary.
 *   - Handles are opaque. Destroy functions accept NULL. Parameter structs must not be NULL.
 *   - Optional tensor arguments are marked "or NULL" below; every other one is required.
 *   - Parameter structs come with *_default_params(); start from those so new fields keep defaults.
 *   - Shapes are row-major. Tensor arguments are annotated  // name: [shape] dtype.
 *   - Thread model: a context, and every tensor and block made from it, may be used by one thread at
 *     a time. Entering a block or context from two threads at once returns HSPMN_ERR_BUSY instead of
 *     corrupting state. Different contexts are independent. hspmn_last_error is per thread.
 */
#ifndef HSPMN_H
#define HSPMN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  define HSPMN_API __declspec(dllexport)
#else
#  define HSPMN_API __attribute__((visibility("default")))
#endif

/* Bumped on any incompatible change of this header; the Java layer refuses a different value. */
#define HSPMN_ABI_VERSION 6

typedef enum hspmn_status {
    HSPMN_OK = 0,
    HSPMN_ERR_INVALID_ARGUMENT = 1, /* NULL handle, bad enum value, bad config field            */
    HSPMN_ERR_SHAPE = 2,            /* tensor shape does not fit the operation                   */
    HSPMN_ERR_DTYPE = 3,            /* tensor dtype does not fit the operation                   */
    HSPMN_ERR_MEMORY_KIND = 4,      /* host tensor where a device one is needed, or the reverse  */
    HSPMN_ERR_OUT_OF_MEMORY = 5,    /* an allocation failed, or (model, block, decoder, large tensor
                                       creation, training forwards) the estimated footprint exceeds
                                       free host or device memory: refused before allocating, the
                                       message gives the bytes needed and available                */
    HSPMN_ERR_NOT_BUILT = 6,        /* the backend was not compiled into this library            */
    HSPMN_ERR_NO_DEVICE = 7,        /* the backend is built but no usable device was found       */
    HSPMN_ERR_BACKEND = 8,          /* a CUDA, cuBLAS or driver call failed                      */
    HSPMN_ERR_NOT_FOUND = 9,        /* unknown parameter name                                    */
    HSPMN_ERR_STATE = 10,           /* call out of order: backward without a training forward,
                                       destroying a context that still owns objects            */
    HSPMN_ERR_NON_FINITE = 11,      /* NaN or Inf in an input that is checked for it             */
    HSPMN_ERR_BUSY = 12,            /* the object is in use by another thread                    */
    HSPMN_ERR_INTERNAL = 13,
    HSPMN_ERR_DEVICE_LOST = 14,     /* the context's CUDA device hit a sticky error (illegal address,
                                       launch failure, device assert, uncorrectable ECC...), here or in
                                       other code of the process sharing its CUDA context: the first
                                       call that sees it and every later call on any context of that
                                       device (except destroy functions) fail with this status, the
                                       message naming the original error. Nothing more can run there
                                       in this process: destroy the objects and restart it. Device
                                       out-of-memory is not sticky (HSPMN_ERR_OUT_OF_MEMORY): the
                                       failed call changed nothing and later calls may succeed     */
    HSPMN_ERR_COMM = 15             /* a collective of a data-parallel communicator failed: a rank did
                                       not join within the timeout, the communicator was aborted
                                       (here or on another rank), or NCCL reported an error. The
                                       communicator is dead: every later collective on it fails too;
                                       destroy it (and detach it from models) and make a new one  */
} hspmn_status;

typedef enum hspmn_backend {
    HSPMN_BACKEND_CPU = 0,
    HSPMN_BACKEND_CUDA = 1,
    HSPMN_BACKEND_AUTO = 2 /* CUDA when built and a device is present, else CPU */
} hspmn_backend;

typedef enum hspmn_dtype {
    HSPMN_DTYPE_BF16 = 0,
    HSPMN_DTYPE_F32 = 1,
    HSPMN_DTYPE_I32 = 2 /* routing indices and counts */
} hspmn_dtype;

typedef enum hspmn_memory {
    HSPMN_MEMORY_HOST = 0,   /* ordinary host memory; hspmn_tensor_data gives its address      */
    HSPMN_MEMORY_DEVICE = 1, /* GPU memory of the context's device                             */
    HSPMN_MEMORY_PINNED = 2  /* page-locked host memory (plain host memory on the CPU backend)  */
} hspmn_memory;

typedef enum hspmn_routing {
    HSPMN_ROUTING_TOPK = 0,     /* k = max(1, floor(S*rho)) largest scores of each sequence        */
    HSPMN_ROUTING_THRESHOLD = 1 /* token s is selected iff sigmoid(n_s) > 0.5 (causal)             */
} hspmn_routing;

typedef enum hspmn_nan_policy {
    HSPMN_NAN_REJECT = 0,   /* forward/route/backward scan inputs and return HSPMN_ERR_NON_FINITE */
    HSPMN_NAN_PROPAGATE = 1 /* no scan; non-finite inputs give non-finite outputs                */
} hspmn_nan_policy;

typedef struct hspmn_context hspmn_context;
typedef struct hspmn_tensor hspmn_tensor;
typedef struct hspmn_block hspmn_block;

/* ---- library ---------------------------------------------------------------------------------- */

HSPMN_API int32_t hspmn_abi_version(void);
HSPMN_API const char* hspmn_version_string(void);
/* Message of the last failed call on this thread ("" if none). Valid until the next call. */
HSPMN_API const char* hspmn_last_error(void);
HSPMN_API const char* hspmn_status_name(int32_t status);
/* 1 when the backend was compiled in (not whether a device is present). */
HSPMN_API int32_t hspmn_backend_built(int32_t backend);

typedef struct hspmn_alloc_stats {
    int64_t live_tensors;  /* tensors created and not destroyed                                 */
    int64_t live_blocks;
    int64_t live_contexts;
    int64_t live_bytes;    /* all memory held by the library: tensors, parameters, caches, scratch */
    int64_t peak_bytes;    /* highest live_bytes since load or the last reset                   */
} hspmn_alloc_stats;

/* Process-wide counters, for leak tests and memory reports. */
HSPMN_API hspmn_status hspmn_alloc_stats_get(hspmn_alloc_stats* out);
HSPMN_API hspmn_status hspmn_alloc_stats_reset_peak(void);

/* ---- context ---------------------------------------------------------------------------------- */

typedef struct hspmn_context_params {
    int32_t backend;     /* hspmn_backend                                               */
    int32_t device;      /* CUDA device ordinal (ignored by the CPU backend)            */
    int32_t num_threads; /* CPU worker threads; 0 = all hardware threads                */
    int32_t nan_policy;  /* hspmn_nan_policy                                            */
    /* CUDA only: a cudaStream_t of `device` that every op of the context is queued on, or NULL (the
     * default) for a non-blocking stream of the library's own. The caller keeps it alive until the
     * context is destroyed; the library never destroys it. Pass cudaStreamLegacy ((void*)0x1) or
     * cudaStreamPerThread ((void*)0x2) for those default streams (a NULL here means the library's
     * stream, not the legacy one; PyTorch reports its default stream as 0; CUDA graphs cannot be
     * captured on the legacy stream). A stream makes the context CUDA-only: with it, AUTO does not fall
     * back to the CPU and CPU is HSPMN_ERR_INVALID_ARGUMENT; a stream of another device is
     * HSPMN_ERR_INVALID_ARGUMENT at create. */
    void* cuda_stream;
} hspmn_context_params;

HSPMN_API hspmn_context_params hspmn_context_default_params(void);
HSPMN_API hspmn_status hspmn_context_create(const hspmn_context_params* params, hspmn_context** out);
/* Fails with HSPMN_ERR_STATE while tensors or blocks made from the context are alive. */
HSPMN_API hspmn_status hspmn_context_destroy(hspmn_context* ctx);
/* The backend actually in use (resolves AUTO). */
HSPMN_API hspmn_status hspmn_context_backend(const hspmn_context* ctx, int32_t* out_backend);
/* Waits for all queued work of the context: its stream only, never the whole device (a no-op on the
 * CPU backend). */
HSPMN_API hspmn_status hspmn_context_synchronize(hspmn_context* ctx);

/* ---- tensors ---------------------------------------------------------------------------------- */

#define HSPMN_MAX_DIMS 4

typedef struct hspmn_tensor_desc {
    int32_t dtype;  /* hspmn_dtype  */
    int32_t memory; /* hspmn_memory */
    int32_t ndim;   /* 1..4         */
    int32_t reserved;
    int64_t shape[HSPMN_MAX_DIMS]; /* unused trailing entries are 1 */
    int64_t numel;
    int64_t nbytes;
} hspmn_tensor_desc;

/* A zero-filled tensor. ndim 1..4, every extent >= 1. */
HSPMN_API hspmn_status hspmn_tensor_create(hspmn_context* ctx, int32_t dtype, int32_t memory,
                                           int32_t ndim, const int64_t* shape, hspmn_tensor** out);
HSPMN_API hspmn_status hspmn_tensor_destroy(hspmn_tensor* t);
HSPMN_API hspmn_status hspmn_tensor_describe(const hspmn_tensor* t, hspmn_tensor_desc* out);
/* Address of the data of a HOST or PINNED tensor; HSPMN_ERR_MEMORY_KIND for device tensors. */
HSPMN_API hspmn_status hspmn_tensor_data(hspmn_tensor* t, void** out);
/* Copy nbytes (must equal the tensor's nbytes) from / to host memory, any memory kind. */
HSPMN_API hspmn_status hspmn_tensor_copy_in(hspmn_tensor* dst, const void* src, int64_t nbytes);
HSPMN_API hspmn_status hspmn_tensor_copy_out(const hspmn_tensor* src, void* dst, int64_t nbytes);
/* Tensor to tensor of the same dtype and element count, any memory kinds. */
HSPMN_API hspmn_status hspmn_tensor_copy(hspmn_tensor* dst, const hspmn_tensor* src);

/* ---- block ------------------------------------------------------------------------------------ */

/* Each field's comment ends with "default V": what hspmn_block_default_params returns (MODEL.md's values).
 * ci/bindings.sh reads that into hspmn_h.BLOCK_PARAMS_NOTES (the reference's BlockConfig defaults), so a
 * new field needs its default here and in block_config.cpp (ARCHITECTURE.md "Adding a block option"). */
typedef struct hspmn_block_params {
    int32_t dim;                /* D; default 2048                                      */
    int32_t num_heads;          /* H; D % H == 0; default 16                            */
    int32_t num_kv_heads;       /* Hkv; H % Hkv == 0; default 4                         */
    int32_t mlp_ratio;          /* F = mlp_ratio * D; default 4                         */
    int32_t conv_kernel;        /* causal depthwise conv width; default 3               */
    int32_t routing;            /* hspmn_routing; default HSPMN_ROUTING_TOPK            */
    float rope_base;            /* RoPE base, > 1; default 10000                        */
    float sparsity_k;           /* rho in (0, 1]; default 0.2                           */
    float router_sparsity_coef; /* lambda_s; default 0.1                                */
    float router_entropy_coef;  /* lambda_e; default 0.01                               */
    float norm_eps;             /* RMSNorm epsilon; default 1e-6                        */
    int32_t reserved;           /* 0                                                    */
} hspmn_block_params;

HSPMN_API hspmn_block_params hspmn_block_default_params(void);
/* Checks a config without allocating; the error names the offending field. */
HSPMN_API hspmn_status hspmn_block_params_validate(const hspmn_block_params* params);
/* Parameters are initialised from seed: linear and conv weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
 * norms 1, router.b = ln(rho/(1-rho)) (so threshold routing starts near rho), router.log_temp 0. */
HSPMN_API hspmn_status hspmn_block_create(hspmn_context* ctx, const hspmn_block_params* params,
                                          uint64_t seed, hspmn_block** out);
HSPMN_API hspmn_status hspmn_block_destroy(hspmn_block* block);
HSPMN_API hspmn_status hspmn_block_get_params(const hspmn_block* block, hspmn_block_params* out);

/* Parameters, by PyTorch state_dict name (MODEL.md "Parameters of one block"), in a fixed order. */
HSPMN_API hspmn_status hspmn_block_param_count(const hspmn_block* block, int32_t* out);
/* Name of parameter i (static storage). */
HSPMN_API hspmn_status hspmn_block_param_name(const hspmn_block* block, int32_t index, const char** out);
/* dtype/shape of a parameter as stored (bf16). */
HSPMN_API hspmn_status hspmn_block_param_describe(const hspmn_block* block, const char* name,
                                                  hspmn_tensor_desc* out);
/* Copy a parameter into / from a tensor of the same shape, bf16 or f32 (converted, round to nearest even). */
HSPMN_API hspmn_status hspmn_block_get_param(const hspmn_block* block, const char* name, hspmn_tensor* dst);
HSPMN_API hspmn_status hspmn_block_set_param(hspmn_block* block, const char* name, const hspmn_tensor* src);
/* Gradient of a parameter after hspmn_block_backward (float32 internally), into bf16 or f32. */
HSPMN_API hspmn_status hspmn_block_get_grad(const hspmn_block* block, const char* name, hspmn_tensor* dst);
HSPMN_API hspmn_status hspmn_block_zero_grad(hspmn_block* block);

typedef struct hspmn_forward_params {
    int32_t training;    /* 0: n = l/t, nothing kept. 1: n = (l+g)/t if noise is on, activations kept
                            for hspmn_block_backward                                                   */
    int32_t noise;       /* training only: 1 draws Gumbel noise g (default), 0 uses g = 0              */
    uint64_t seed;       /* Gumbel noise key: (seed, step mod 2^32, layer, row_offset + b, s)          */
    int64_t step;
    int32_t layer;
    float aux_target;    /* rho_target of the aux loss; < 0 means the config's sparsity_k              */
    /* Residual dropout p in [0, 1) (native/README.md "Residual dropout"), training only: m and o are
     * multiplied by keep / (1 - p), the mask drawn from (seed, step, layer, b, s, d) like the noise.
     * 0 (default): none. Ignored when training is 0.                                                  */
    float dropout;
    int32_t reserved;    /* 0                                                                          */
    /* >= 0: the index of x's first row in the batch the noise and dropout draws are keyed by (row b
     * draws as row row_offset + b), so data-parallel ranks that each forward rows [first, first + B)
     * of one global batch draw what a single forward of the whole batch draws. 0 (default).         */
    int64_t row_offset;
} hspmn_forward_params;

HSPMN_API hspmn_forward_params hspmn_forward_default_params(void);

/* Forward with the block's own routing.
 *   x:   [B, S, D] bf16      out: [B, S, D] bf16      aux: [1] f32 or NULL */
HSPMN_API hspmn_status hspmn_block_forward(hspmn_block* block, const hspmn_forward_params* params,
                                           const hspmn_tensor* x, hspmn_tensor* out, hspmn_tensor* aux);

/* Forward with routing pinned from outside (parity tests, decoding). noise, indices, counts and aux
 * may be NULL.
 *   noise:   [B, S] f32  Gumbel noise used instead of the generator (training only)
 *   indices: [B, C] i32  selected positions, strictly increasing in [0, S) for the first counts[b]
 *   counts:  [B]    i32  number of selected tokens per sequence, 0..C
 * indices and counts come together or not at all. */
HSPMN_API hspmn_status hspmn_block_forward_routed(hspmn_block* block, const hspmn_forward_params* params,
                                                  const hspmn_tensor* x, const hspmn_tensor* noise,
                                                  const hspmn_tensor* indices, const hspmn_tensor* counts,
                                                  hspmn_tensor* out, hspmn_tensor* aux);

typedef struct hspmn_backward_params {
    int32_t accumulate; /* 1: add into the gradients already held; 0: overwrite them (default) */
    int32_t reserved;
} hspmn_backward_params;

HSPMN_API hspmn_backward_params hspmn_backward_default_params(void);

/* Backward of the last training forward, routing held fixed.
 *   d_out: [B, S, D] bf16   d_aux: [1] f32 or NULL (0)   d_x: [B, S, D] bf16 or NULL (not wanted)
 * Parameter gradients are kept in the block (hspmn_block_get_grad). The cached activations stay
 * until the next forward, so backward may be repeated. */
HSPMN_API hspmn_status hspmn_block_backward(hspmn_block* block, const hspmn_backward_params* params,
                                            const hspmn_tensor* d_out, const hspmn_tensor* d_aux,
                                            hspmn_tensor* d_x);

/* Routing alone.
 *   x:       [B, S, D] bf16
 *   noise:   [B, S] f32 or NULL (training with noise on: drawn from the generator)
 *   logits:  [B, S] f32   l = x.w + b
 *   probs:   [B, S] f32   p = sigmoid(l)
 *   indices: [B, C] i32   selected positions in increasing order, then -1; C >= k (topk) or C == S (threshold)
 *   counts:  [B]    i32
 *   aux:     [1]    f32
 * Each output may be NULL when not wanted; indices and counts come together. */
HSPMN_API hspmn_status hspmn_block_route(hspmn_block* block, const hspmn_forward_params* params,
                                         const hspmn_tensor* x, const hspmn_tensor* noise,
                                         hspmn_tensor* logits, hspmn_tensor* probs,
                                         hspmn_tensor* indices, hspmn_tensor* counts, hspmn_tensor* aux);

/* The Gumbel noise the generator draws for (seed, step, layer): Philox4x32-10, key = seed,
 * counter = (s, b, layer, low 32 bits of step); u = ((bits >> 8) + 0.5) * 2^-24; g = -ln(-ln u).
 * Steps 2^32 apart draw the same noise.
 *   out: [B, S] f32 */
HSPMN_API hspmn_status hspmn_gumbel_noise(hspmn_context* ctx, uint64_t seed, int64_t step, int32_t layer,
                                          hspmn_tensor* out);

/* ---- CUDA graphs ------------------------------------------------------------------------------ */

typedef struct hspmn_graph hspmn_graph;

/* Records one inference hspmn_block_forward(block, params, x, out, aux) into a CUDA graph that
 * hspmn_graph_launch replays on the context's stream with no host work besides the launch.
 *   x: [B, S, D] bf16 DEVICE   out: [B, S, D] bf16 DEVICE   aux: [1] f32 DEVICE or NULL
 * The graph is bound to these tensors (by address: write new input into x, read out after the
 * replay) and to params as given (params->training must be 0). Parameter values are read at each
 * replay, so hspmn_block_set_param between replays takes effect. The call runs the forward once
 * (which sizes the block's scratch and checks x under HSPMN_NAN_REJECT), then captures; replays do
 * not scan x for NaN/Inf. A later call on the block that needs larger scratch (a bigger shape, or the
 * block's first training forward or route call) invalidates the graph: hspmn_graph_launch then fails
 * with HSPMN_ERR_STATE; a smaller forward does not. A forward long enough to run in chunks of rows
 * (native/README.md "Memory of a long forward") uses scratch shared by the context's blocks: a
 * longer chunked forward or decoder call of any of them that regrows it invalidates that graph too.
 * A replay drops what a training forward kept.
 * The tensors and the block must outlive the graph (destroying them first is HSPMN_ERR_STATE).
 * HSPMN_ERR_INVALID_ARGUMENT on the CPU backend, which has no graphs. */
HSPMN_API hspmn_status hspmn_graph_capture_forward(hspmn_block* block, const hspmn_forward_params* params,
                                                   const hspmn_tensor* x, hspmn_tensor* out, hspmn_tensor* aux,
                                                   hspmn_graph** out_graph);
/* Queues one replay; returns without waiting (hspmn_context_synchronize waits). */
HSPMN_API hspmn_status hspmn_graph_launch(hspmn_graph* graph);
HSPMN_API hspmn_status hspmn_graph_destroy(hspmn_graph* graph);

/* ---- language model --------------------------------------------------------------------------- */

typedef struct hspmn_model hspmn_model;

/* MODEL.md "The language model": embedding [V, D] -> num_layers blocks -> RMSNorm -> tied head. */
typedef struct hspmn_model_params {
    int32_t vocab_size;         /* V, 2..65536 (byte-level: 256)                                 */
    int32_t num_layers;         /* L, 1..1024                                                    */
    hspmn_block_params block;   /* every layer's config; block.norm_eps is the final norm's too  */
} hspmn_model_params;

HSPMN_API hspmn_model_params hspmn_model_default_params(void);
HSPMN_API hspmn_status hspmn_model_params_validate(const hspmn_model_params* params);
/* embedding U(-1/sqrt(D), 1/sqrt(D)), layer i as hspmn_block_create with its own seed drawn from
 * seed, norm 1. Every parameter has a float32 master copy (what hspmn_model_adamw_step updates)
 * and the bf16 copy rounded from it that forward computes with; they start equal. */
HSPMN_API hspmn_status hspmn_model_create(hspmn_context* ctx, const hspmn_model_params* params, uint64_t seed,
                                          hspmn_model** out);
HSPMN_API hspmn_status hspmn_model_destroy(hspmn_model* model);
HSPMN_API hspmn_status hspmn_model_get_params(const hspmn_model* model, hspmn_model_params* out);

/* Parameters by PyTorch state_dict name, in this order: "embedding", "blocks.{i}.<block name>"
 * (hspmn_block_param_name order) for i = 0..L-1, "norm". */
HSPMN_API hspmn_status hspmn_model_param_count(const hspmn_model* model, int32_t* out);
/* Name of parameter i, valid while the model lives. */
HSPMN_API hspmn_status hspmn_model_param_name(const hspmn_model* model, int32_t index, const char** out);
/* dtype (f32, the master copy) and shape of a parameter. */
HSPMN_API hspmn_status hspmn_model_param_describe(const hspmn_model* model, const char* name, hspmn_tensor_desc* out);
/* The master weight into an f32 (exact) or bf16 (rounded) tensor of its shape. */
HSPMN_API hspmn_status hspmn_model_get_param(const hspmn_model* model, const char* name, hspmn_tensor* dst);
/* Sets the master weight from f32 (exact) or bf16 (widened) and re-rounds the bf16 copy. */
HSPMN_API hspmn_status hspmn_model_set_param(hspmn_model* model, const char* name, const hspmn_tensor* src);
/* Gradient (float32 internally) of the last hspmn_model_backward(s), into f32 or bf16. */
HSPMN_API hspmn_status hspmn_model_get_grad(const hspmn_model* model, const char* name, hspmn_tensor* dst);
HSPMN_API hspmn_status hspmn_model_zero_grad(hspmn_model* model);

typedef struct hspmn_model_forward_params {
    int32_t training;   /* 1: layer i draws Gumbel noise (seed, step, layer = i) if noise is on, and
                           activations are kept for hspmn_model_backward. 0: no noise, nothing kept */
    int32_t noise;      /* training only: 1 draws Gumbel noise (default), 0 uses none            */
    uint64_t seed;
    int64_t step;       /* the noise step; with gradient accumulation step * accum + micro       */
    float aux_target;   /* every layer's rho_target; < 0 means block.sparsity_k                  */
    float dropout;      /* residual dropout p in [0, 1), training only: layer i's masks are keyed
                           (seed, step, layer = i) like its noise (hspmn_forward_params.dropout)  */
    int64_t row_offset; /* >= 0: the global index of tokens' first row; noise and dropout of row b
                           are drawn as row row_offset + b (data parallelism: the rank's first
                           row, so N ranks draw what one forward of the whole batch draws). 0    */
    int32_t recompute;  /* training only: 1 keeps each layer's input [B, S, D] bf16 instead of its
                           activations, and hspmn_model_backward re-runs each layer's forward just
                           before its backward: the same gradients bit for bit, for about one more
                           forward of compute, in memory for one layer's activations. 0 (default) */
} hspmn_model_forward_params;

HSPMN_API hspmn_model_forward_params hspmn_model_forward_default_params(void);

/* Next-token loss.
 *   tokens:  [B, S] i32 in [0, V)
 *   targets: [B, S] i32 in [0, V)   targets[b, s] is the token after tokens[b, s]
 *   loss:    [2] f32 or NULL        {mean cross-entropy (nats) + sum of the layers' aux, mean cross-entropy}
 *   stats:   [L, 2] f32 or NULL     per layer {aux, routed fraction = selected tokens / (B * S)}
 * The cross-entropy is fused with the tied head: no [B * S, V] logits are kept. */
HSPMN_API hspmn_status hspmn_model_forward(hspmn_model* model, const hspmn_model_forward_params* params,
                                           const hspmn_tensor* tokens, const hspmn_tensor* targets,
                                           hspmn_tensor* loss, hspmn_tensor* stats);

typedef struct hspmn_model_backward_params {
    float loss_scale;   /* gradients of loss_scale * loss (1 / accumulation steps to average)    */
    int32_t accumulate; /* 1: add into the gradients held; 0: overwrite them (default)           */
} hspmn_model_backward_params;

HSPMN_API hspmn_model_backward_params hspmn_model_backward_default_params(void);
/* Backward of the last training hspmn_model_forward, routing held fixed. */
HSPMN_API hspmn_status hspmn_model_backward(hspmn_model* model, const hspmn_model_backward_params* params);

/* Inference forward; logits of the last position of each sequence, for sampling.
 *   tokens: [B, S] i32 in [0, V)   logits: [B, V] f32 */
HSPMN_API hspmn_status hspmn_model_logits(hspmn_model* model, const hspmn_tensor* tokens, hspmn_tensor* logits);

typedef struct hspmn_adamw_params {
    int64_t step;          /* 1-based count of updates including this one (bias correction)        */
    float lr;
    float beta1;           /* 0.9                                                                  */
    float beta2;           /* 0.95                                                                 */
    float eps;             /* 1e-8                                                                 */
    float weight_decay;    /* decoupled; applied to 2-D parameters only (not norms, router, temp)   */
    float max_grad_norm;   /* global L2 clipping; <= 0: none                                       */
} hspmn_adamw_params;

typedef struct hspmn_adamw_result {
    float grad_norm;       /* global L2 norm of the gradients before clipping                      */
    int32_t applied;       /* 0 when the norm was not finite: nothing was changed                  */
} hspmn_adamw_result;

HSPMN_API hspmn_adamw_params hspmn_adamw_default_params(void);
/* One optimizer step on the held gradients: norm, clipping (c = max / (norm + 1e-6) when < 1),
 * AdamW on the master weights (p *= 1 - lr wd; m, v moments; p -= lr / (1 - b1^t) * m /
 * (sqrt(v) / sqrt(1 - b2^t) + eps)), then the bf16 copies are re-rounded. Gradients are kept. */
HSPMN_API hspmn_status hspmn_model_adamw_step(hspmn_model* model, const hspmn_adamw_params* params,
                                              hspmn_adamw_result* out);
/* Router bias control (threshold routing; native/README.md "Router bias control"), after
 * hspmn_model_adamw_step: with f_i the mean, over the training forwards since the optimizer step
 * before, of layer i's share of tokens with router logit l > 0 (what evaluation routes on that input),
 * blocks.{i}.router.b's master weight += rate if f_i < target, -= rate if f_i > target (the f32 sum),
 * and its bf16 copy is re-rounded. target: the aux loss's rho_target of the step, in [0, 1]; rate >= 0
 * (0 changes nothing). fractions: [num_layers] f32 host memory that receives each f_i, or NULL.
 * HSPMN_ERR_STATE when no training forward came since the last call. */
HSPMN_API hspmn_status hspmn_model_router_bias_step(hspmn_model* model, float target, float rate, float* fractions);
/* AdamW's moments of a parameter (f32, its shape; zero until the first step): which 0 = m, 1 = v.
 * With a sharded communicator attached (hspmn_model_set_comm) get is collective and gives the full
 * moment on every rank; set takes the full moment and keeps the rank's share. */
HSPMN_API hspmn_status hspmn_model_get_moment(const hspmn_model* model, const char* name, int32_t which,
                                              hspmn_tensor* dst);
HSPMN_API hspmn_status hspmn_model_set_moment(hspmn_model* model, const char* name, int32_t which,
                                              const hspmn_tensor* src);

/* ---- data-parallel training (native/README.md "Data parallelism") ----------------------------- */

/* A communicator joins `world` ranks, each with its own context and a model of the same config and
 * seed (or the same loaded weights). Attached to a model (hspmn_model_set_comm), it makes training
 * data-parallel: each rank runs forward/backward on its own batch, the gradients are averaged over
 * the ranks, and every rank ends each step with identical weights. */
typedef struct hspmn_comm hspmn_comm;

typedef enum hspmn_comm_kind {
    HSPMN_COMM_LOCAL = 0, /* ranks are threads of this process, one context each (any backend): the
                             host rendezvous of CPU tests, and one host without NCCL            */
    HSPMN_COMM_NCCL = 1   /* NCCL (libnccl.so.2 opened with dlopen at first use, like cuBLASLt;
                             $HSPMN_NCCL overrides the path); CUDA contexts only               */
} hspmn_comm_kind;

#define HSPMN_COMM_ID_BYTES 128

typedef struct hspmn_comm_params {
    int32_t kind;        /* hspmn_comm_kind                                                   */
    int32_t rank;        /* in [0, world)                                                     */
    int32_t world;       /* >= 1                                                              */
    int32_t timeout_ms;  /* a create or collective not joined by every rank within it fails on
                            every live rank with HSPMN_ERR_COMM; default 120000, >= 1         */
    uint8_t id[HSPMN_COMM_ID_BYTES]; /* from hspmn_comm_unique_id on one rank, given to all
                            (through a file or the environment for several processes)         */
} hspmn_comm_params;

/* kind LOCAL, rank 0, world 1, timeout 120000 ms, id zero. */
HSPMN_API hspmn_comm_params hspmn_comm_default_params(void);
/* *out = 1 when communicators of this kind can be made here (LOCAL: always; NCCL: the CUDA backend
 * is built and libnccl loads), else 0; the reason NCCL is not available is hspmn_last_error(). */
HSPMN_API hspmn_status hspmn_comm_available(int32_t kind, int32_t* out);
/* A fresh id (HSPMN_COMM_ID_BYTES bytes into out): made once, on one rank, and given to every rank. */
HSPMN_API hspmn_status hspmn_comm_unique_id(int32_t kind, uint8_t* out);
/* Collective over the ranks: returns when every rank joined (or fails with HSPMN_ERR_COMM after the
 * timeout). ctx: the rank's context (NCCL: a CUDA context; its device is the rank's GPU). The
 * communicator uses the context: destroy it before the context. */
HSPMN_API hspmn_status hspmn_comm_create(hspmn_context* ctx, const hspmn_comm_params* params, hspmn_comm** out);
/* Fails with HSPMN_ERR_STATE while a model still has it attached. Not collective. */
HSPMN_API hspmn_status hspmn_comm_destroy(hspmn_comm* comm);
/* From any thread: pending and later collectives of every rank of the communicator fail with
 * HSPMN_ERR_COMM instead of waiting (LOCAL: at once; NCCL: this rank aborts its NCCL communicator and
 * the others time out or see NCCL's error). */
HSPMN_API hspmn_status hspmn_comm_abort(hspmn_comm* comm);
HSPMN_API hspmn_status hspmn_comm_rank(const hspmn_comm* comm, int32_t* rank, int32_t* world);
/* Collective: host floats summed over the ranks (mean != 0: divided by world), in place, the same
 * result on every rank; for losses and metrics.   host: [n] f32 host memory, n >= 1 */
HSPMN_API hspmn_status hspmn_comm_all_reduce_f32(hspmn_comm* comm, float* host, int64_t n, int32_t mean);

typedef struct hspmn_data_parallel_params {
    int64_t bucket_bytes;    /* gradients are averaged in buckets of about this many bytes, each
                                started as soon as the blocks filling it finished their backward;
                                default 25 MiB, >= 1                                            */
    int32_t shard_optimizer; /* 1: ZeRO-1, each rank keeps AdamW moments for its 1/world share of
                                the parameters only (default 0)                                  */
    int32_t reserved;        /* 0                                                                */
} hspmn_data_parallel_params;

HSPMN_API hspmn_data_parallel_params hspmn_data_parallel_default_params(void);
/* Attaches comm to the model (NULL detaches; params may then be NULL). The model's context must be
 * the one comm was created with. Every rank's model must have the same config. Collective when it changes the sharding
 * (attach with shard_optimizer 1 keeps this rank's share of the moments; detaching a sharded model
 * gathers them back). With a comm attached:
 *   hspmn_model_backward        averages the gradients over the ranks (collective) and returns
 *                               when they are averaged; gradient accumulation works as without it
 *                               (each backward averages what it added)
 *   hspmn_model_adamw_step      the same norm, clipping and weights on every rank (collective
 *                               when sharded: each rank updates its share, then all are gathered)
 *   hspmn_model_get_moment      collective when sharded: every rank gets the full moment
 *   hspmn_model_set_moment      takes the full moment; a sharded rank keeps its share
 *   hspmn_model_router_bias_step  averages the fractions over the ranks (collective)
 * so a checkpoint written by one rank holds the full state and resumes with any number of ranks.
 * A failed collective (HSPMN_ERR_COMM) leaves the model's gradients or weights unspecified.
 * Without a comm every call is bitwise what it was. */
HSPMN_API hspmn_status hspmn_model_set_comm(hspmn_model* model, hspmn_comm* comm,
                                            const hspmn_data_parallel_params* params);

typedef struct hspmn_data_parallel_stats {
    int64_t backwards;       /* backward calls with the comm attached since it was attached      */
    int64_t buckets;         /* buckets per backward                                            */
    int64_t bytes;           /* gradient bytes averaged per backward                            */
    double all_reduce_ms;    /* the last backward: time the buckets' all-reduces took (NCCL: on
                                the communication stream; LOCAL: on the host, on a thread of the
                                communicator for CPU contexts, on the rank's thread for CUDA)    */
    double overlapped_ms;    /* the part of all_reduce_ms during which the backward still ran    */
} hspmn_data_parallel_stats;

HSPMN_API hspmn_status hspmn_model_data_parallel_stats(const hspmn_model* model, hspmn_data_parallel_stats* out);

/* ---- cached decoding (MODEL.md "Decoding with a cache") --------------------------------------- */

typedef struct hspmn_decoder hspmn_decoder;

/* Caches of up to max_seqs sequences ("slots") of up to max_len tokens each, for a model with
 * threshold routing (top-k routing depends on the whole sequence and cannot decode:
 * HSPMN_ERR_INVALID_ARGUMENT). Per layer and slot: K and V after RoPE of every token seen, routed or
 * not, and the conv's last conv_kernel - 1 normalised inputs. Slots start empty. The decoder reads
 * the model's current weights at each call; it must be destroyed before the model. */
HSPMN_API hspmn_status hspmn_decoder_create(hspmn_model* model, int32_t max_seqs, int64_t max_len,
                                            hspmn_decoder** out);
HSPMN_API hspmn_status hspmn_decoder_destroy(hspmn_decoder* dec);
/* Empties a slot: its length becomes 0. */
HSPMN_API hspmn_status hspmn_decoder_reset(hspmn_decoder* dec, int32_t slot);
/* Number of tokens a slot holds. */
HSPMN_API hspmn_status hspmn_decoder_length(const hspmn_decoder* dec, int32_t slot, int64_t* out);
/* Appends T tokens to each of n slots and returns the next-token logits after each slot's last one:
 * T > 1 is a prefill, T = 1 a decode step; slots of different lengths go in one call. Only routed
 * tokens compute Q and attention. In threshold mode the logits equal those of hspmn_model_logits on
 * each slot's whole sequence (up to the order of float32 sums).
 *   slots:  [n] i32 distinct, in [0, max_seqs); length + T <= max_len for each
 *   tokens: [n, T] i32 in [0, V)
 *   logits: [n, V] f32 or NULL
 *   routed: [n, T, L] i32 or NULL: 1 where layer l's router selected the token, else 0 */
HSPMN_API hspmn_status hspmn_decoder_append(hspmn_decoder* dec, const hspmn_tensor* slots,
                                            const hspmn_tensor* tokens, hspmn_tensor* logits,
                                            hspmn_tensor* routed);

/* ---- sampling (native/README.md "Sampling": one definition, bit-identical on every backend and in Java) */

typedef struct hspmn_sampling_params {
    float temperature;  /* 0: greedy (ties to the lowest id); else in [2^-126, 100]               */
    int32_t top_k;      /* 0: no limit; >= V keeps all                                           */
    float top_p;        /* in (0, 1]; 1 keeps all                                                */
    int32_t reserved;   /* 0                                                                     */
    uint64_t seed;      /* the random stream                                                     */
    int64_t draw;       /* 1-based index of this draw in the stream, >= 1 (ignored when greedy)   */
} hspmn_sampling_params;

/* Greedy; top_k 0, top_p 1, seed 0, draw 1. */
HSPMN_API hspmn_sampling_params hspmn_sampling_default_params(void);
/* One token per row.
 *   logits: [n, V] f32, V in 1..65536   params: host [n]   tokens: [n] i32
 * Tensors may be in any memory of the context. -Inf logits are allowed (masked tokens); a row holding
 * NaN or +Inf, or only -Inf, is HSPMN_ERR_NON_FINITE naming the first such row (whatever the NaN
 * policy); the other rows' tokens are still written and a bad row's token is -1 (NaN), -2 (+Inf) or
 * -3 (only -Inf). Waits for the result. */
HSPMN_API hspmn_status hspmn_sample(hspmn_context* ctx, const hspmn_tensor* logits,
                                    const hspmn_sampling_params* params, hspmn_tensor* tokens);

/* ---- decode steps: sampling on the backend, graphs per batch size ----------------------------- */

/* One decode step of n slots with the next token sampled by the backend (hspmn_sample's definition),
 * so only token ids come back: appends tokens[j] to slot slots[j] and samples next[j] from the
 * logits after it under params[j] (params[j].draw: the draw's index in that seed's stream).
 *   slots: host [n] distinct, each with length + 1 <= max_len   tokens: host [n] in [0, V)
 *   params: host [n]   next: host [n] i32 (written)   logits: [n, V] f32 tensor or NULL (a copy out)
 * With graphs captured (hspmn_decoder_capture) the step replays the graph of the smallest captured
 * batch size >= n; n above every captured size is HSPMN_ERR_INVALID_ARGUMENT. Non-finite logits of a
 * slot are HSPMN_ERR_NON_FINITE naming it: that slot is reset, the others advance with next written. */
HSPMN_API hspmn_status hspmn_decoder_step(hspmn_decoder* dec, int32_t n, const int32_t* slots, const int32_t* tokens,
                                          const hspmn_sampling_params* params, int32_t* next, hspmn_tensor* logits);
/* Records the decode step for each batch size as one CUDA graph (every layer, the head and the
 * sampling): sizes in [1, min(32, max_seqs)]; it replaces earlier captures. Slots are unchanged.
 * HSPMN_ERR_INVALID_ARGUMENT on the CPU backend, which has no graphs. */
HSPMN_API hspmn_status hspmn_decoder_capture(hspmn_decoder* dec, const int32_t* batch_sizes, int32_t count);

/* ---- DLPack ----------------------------------------------------------------------------------- */

/* Exports a tensor as a DLPack DLManagedTensor (DLPack 0.8 ABI, github.com/dmlc/dlpack) that shares
 * its memory, for frameworks that import DLPack (torch.from_dlpack, JAX, CuPy, ...): device kDLCPU for
 * HOST, kDLCUDAHost for PINNED, kDLCUDA with the context's device ordinal for DEVICE tensors (PINNED on
 * the CPU backend is kDLCPU); dtype bf16 (kDLBfloat, 16 bits), f32 (kDLFloat, 32) or i32 (kDLInt, 32);
 * compact row-major (strides NULL). *out is a DLManagedTensor*; the consumer calls its deleter exactly
 * once when done (from any thread). Until then hspmn_tensor_destroy of the tensor fails with
 * HSPMN_ERR_STATE. Work queued on the context's stream is not waited for: synchronise first. */
HSPMN_API hspmn_status hspmn_tensor_to_dlpack(hspmn_tensor* t, void** out);

/* Imports a DLPack DLManagedTensor (DLPack 0.8 ABI; `managed` is a DLManagedTensor*, e.g. the pointer
 * of a "dltensor" capsule, which the caller then renames "used_dltensor") as a tensor over the
 * producer's memory, without a copy. What is accepted:
 *   device  kDLCPU -> HOST, kDLCUDAHost -> PINNED, kDLCUDA -> DEVICE (CUDA backend only, device_id
 *           equal to the context's device); anything else is HSPMN_ERR_MEMORY_KIND
 *   dtype   bf16 (kDLBfloat 16), f32 (kDLFloat 32), i32 (kDLInt 32), lanes 1; else HSPMN_ERR_DTYPE
 *   shape   ndim 1..4, every extent >= 1, at most 2^46 bytes; else HSPMN_ERR_SHAPE
 *   strides NULL or the compact row-major strides (the stride of an extent-1 dimension is not looked
 *           at); else HSPMN_ERR_SHAPE: make the producer's tensor contiguous first
 *   data    data + byte_offset non-NULL and 16-byte aligned (the CUDA kernels load 16 bytes at a
 *           time; the same rule on every backend); else HSPMN_ERR_INVALID_ARGUMENT
 * The library trusts the producer's device and shape to describe memory it may read and write.
 * Ownership: on HSPMN_OK the new tensor owns `managed`: hspmn_tensor_destroy of it (Java: closing the
 * tensor or its Context) first waits for the context's stream, then calls managed->deleter(managed)
 * exactly once (not if it is NULL), on the destroying thread; the deleter must not call into this
 * context. On any error nothing was kept and the deleter was not called: the caller still owns
 * `managed`. The tensor counts in live_tensors but not live_bytes (the memory is the producer's). It
 * is an ordinary tensor otherwise, hspmn_tensor_to_dlpack included: while such an export is alive the
 * destroy fails with HSPMN_ERR_STATE, so the producer's deleter runs only after every consumer let go.
 * Stream order is the caller's business: make the producer's writes visible to the context's stream
 * (hspmn_context_params.cuda_stream: use the producer's stream) before the library reads them. */
HSPMN_API hspmn_status hspmn_tensor_from_dlpack(hspmn_context* ctx, void* managed, hspmn_tensor** out);
/* The same for DLPack 1.x's DLManagedTensorVersioned (a "dltensor_versioned" capsule, renamed
 * "used_dltensor_versioned"): version.major must be 1 and the read-only flag must be clear (the library
 * may write any tensor it is given), else HSPMN_ERR_INVALID_ARGUMENT. Ownership as above. */
HSPMN_API hspmn_status hspmn_tensor_from_dlpack_versioned(hspmn_context* ctx, void* managed, hspmn_tensor** out);

#ifdef __cplusplus
}
#endif

#endif /* HSPMN_H */
