// What a configuration will allocate, computed before anything is allocated. Linux overcommits: a
// malloc far beyond RAM succeeds and the process is killed when the pages are touched, so the
// creation of a model, block or decoder, and a forward over more rows than before, first compare the
// whole footprint with what the machine has free and refuse with HSPMN_ERR_OUT_OF_MEMORY, giving the
// bytes needed and available, instead of growing until the kernel kills the process.
//
// The estimates follow the allocation sites term by term (cpu/cpu_block.cpp, cuda/cuda_block.cu,
// model/model.cpp, model/decoder.cpp, the backends' model ops). Routed rows are counted at their
// bound: k per sequence for top-k, every token for threshold routing (the router may select them
// all), so a threshold estimate is an upper bound and a top-k one is close to the measured peak
// (native/tests/test_memory.cpp checks both). Inference forwards of a block are not counted here:
// their scratch belongs to the block forward (bounded by its own chunking).
#pragma once

#include <cstdint>

#include "block_config.h"
#include "hspmn.h"

namespace hspmn {

class Backend;

// Bytes, as doubles so that products of huge extents never wrap (exact up to 2^53 bytes).
struct Footprint {
    double host = 0.0;    // host memory: the tracked heap and pinned buffers
    double device = 0.0;  // device memory (CUDA)

    Footprint& operator+=(const Footprint& o) {
        host += o.host;
        device += o.device;
        return *this;
    }
    friend Footprint operator+(Footprint a, const Footprint& b) { return a += b; }
    friend Footprint operator*(double k, Footprint a) {
        a.host *= k;
        a.device *= k;
        return a;
    }
};

// Componentwise max / (a - b clamped at 0).
Footprint max_of(const Footprint& a, const Footprint& b);
Footprint growth(const Footprint& to, const Footprint& from);

// One block's parameters on `backend` (HSPMN_BACKEND_CPU / _CUDA): the stored bf16 values, the copy
// forward computes with, the f32 gradients, plus the host staging of their initialisation.
Footprint block_params_footprint(const BlockConfig& cfg, int32_t backend);

// A training forward over [B, S] in one block: what it keeps for backward. `forward_peak` and
// `backward_peak`, when given, receive what the block's forward and its backward take on top of that
// while they run (on CUDA the backward's arena, which the context keeps and every block shares).
Footprint block_training_footprint(const BlockConfig& cfg, int64_t B, int64_t S, int32_t backend, int threads,
                                   Footprint* forward_peak = nullptr, Footprint* backward_peak = nullptr);

// hspmn_model_create: every block's parameters, the embedding and final norm, and the float32
// master weights and AdamW moments of every parameter.
Footprint model_footprint(const hspmn_model_params& p, int32_t backend);
// Parameters of the whole model (embedding, blocks, norm).
double model_param_count(const hspmn_model_params& p);

// A model forward over [B, S] (and, when training, its backward): the model's row buffers, every
// layer's kept activations when training (with recompute: every layer's input and one layer's
// activations), and the largest transient of one layer or of the head. Inference forwards count the
// model's own buffers and the head only (see the file comment).
Footprint model_rows_footprint(const hspmn_model_params& p, int64_t B, int64_t S, bool training, int32_t backend,
                               int threads, bool recompute = false);

// hspmn_decoder_create: every layer's K/V cache (max_seqs x max_len x Hkv*Dh, both) and conv
// history in the precision the backend's forward keeps them (f32 on the CPU, bf16 on CUDA), the
// rotary tables of max_len positions, and the scratch of a one-token step over every slot (an
// approximation from the forward's activations at max_seqs rows). An append's scratch grows with its
// own new rows (a long prefill) and is not included.
Footprint decoder_footprint(const hspmn_model_params& p, int32_t max_seqs, int64_t max_len, int32_t backend);

// Throws Error{HSPMN_ERR_OUT_OF_MEMORY} when `need` exceeds what is free: host memory
// (host_memory_available) and, for a backend with a device, the device's free memory. `what` names
// the configuration ("hspmn_model_create: a model of 2 layers, dim 32768, ..."); the message gives
// the bytes needed and available for the memory that is short.
void require_memory(Backend& backend, const Footprint& need, const char* what);

}  // namespace hspmn
