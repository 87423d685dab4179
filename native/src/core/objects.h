// The structs behind the opaque handles of hspmn.h.
#pragma once

#include <atomic>
#include <cstdint>

#include "alloc.h"
#include "backend.h"
#include "block_config.h"
#include "footprint.h"
#include "hspmn.h"

struct hspmn_context : hspmn::Tracked {
    std::atomic<int> busy{0};
    hspmn_context_params params{};
    hspmn::Backend* backend = nullptr;
    std::atomic<int64_t> live_tensors{0};
    std::atomic<int64_t> live_blocks{0};
    std::atomic<int64_t> live_models{0};
    std::atomic<int64_t> live_graphs{0};
    std::atomic<int64_t> live_comms{0};  // data-parallel communicators made with the context
};

struct hspmn_tensor : hspmn::Tracked {
    hspmn_context* ctx = nullptr;
    int32_t dtype = 0;
    int32_t memory = 0;
    int32_t ndim = 0;
    int64_t shape[HSPMN_MAX_DIMS] = {1, 1, 1, 1};
    int64_t numel = 0;
    int64_t nbytes = 0;
    void* data = nullptr;
    // Graphs bound to this tensor; destroying it while > 0 is HSPMN_ERR_STATE.
    std::atomic<int> graph_refs{0};
    // DLPack exports whose deleter has not run yet; destroying it while > 0 is HSPMN_ERR_STATE.
    std::atomic<int> dlpack_refs{0};
    // A tensor over a DLPack producer's memory (hspmn_tensor_from_dlpack): destroy calls
    // import_release(import_owner), which runs the producer's deleter, instead of freeing data.
    void* import_owner = nullptr;
    void (*import_release)(void* owner) = nullptr;
};

struct hspmn_block : hspmn::Tracked {
    std::atomic<int> busy{0};
    hspmn_context* ctx = nullptr;
    hspmn::BlockConfig cfg{};
    hspmn::BlockImpl* impl = nullptr;
    // Set by a successful training forward; what backward checks d_out against.
    bool has_cache = false;
    int64_t cache_B = 0;
    int64_t cache_S = 0;
    // The largest training-forward footprint checked against free memory so far (footprint.h):
    // a forward that needs no more is not checked again.
    hspmn::Footprint admitted{};
    // Graphs captured from this block; destroying it while > 0 is HSPMN_ERR_STATE.
    std::atomic<int> graph_refs{0};
};

struct hspmn_graph : hspmn::Tracked {
    hspmn_block* block = nullptr;
    const hspmn_tensor* x = nullptr;
    hspmn_tensor* out = nullptr;
    hspmn_tensor* aux = nullptr;
    hspmn::GraphImpl* impl = nullptr;
};

namespace hspmn {
class Model;
class Comm;  // data parallelism (comm/comm.h)
}

struct hspmn_model : hspmn::Tracked {
    std::atomic<int> busy{0};
    hspmn_context* ctx = nullptr;
    hspmn::Model* impl = nullptr;
    // The largest forward footprint checked against free memory so far (footprint.h).
    hspmn::Footprint admitted{};
    // Decoders made from this model; destroying it while > 0 is HSPMN_ERR_STATE.
    std::atomic<int> decoders{0};
    // The data-parallel communicator attached (hspmn_model_set_comm), or null.
    hspmn_comm* comm = nullptr;
};

// A data-parallel communicator (hspmn_comm_*): its rank of the collectives, over the context it was
// made with. Destroying it while models > 0 (attached with hspmn_model_set_comm) is HSPMN_ERR_STATE.
struct hspmn_comm : hspmn::Tracked {
    hspmn::Comm* impl = nullptr;
    hspmn_context* ctx = nullptr;
    std::atomic<int> models{0};
    std::atomic<int> busy{0};
};

namespace hspmn {
class Decoder;
}

struct hspmn_decoder : hspmn::Tracked {
    hspmn_model* model = nullptr;
    hspmn::Decoder* impl = nullptr;
};
