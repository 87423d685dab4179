// The structs behind the opaque handles of hspmn.h.
#pragma once

#include <atomic>
#include <cstdint>

#include "alloc.h"
#include "backend.h"
#include "block_config.h"
#include "hspmn.h"

struct hspmn_context : hspmn::Tracked {
    std::atomic<int> busy{0};
    hspmn_context_params params{};
    hspmn::Backend* backend = nullptr;
    std::atomic<int64_t> live_tensors{0};
    std::atomic<int64_t> live_blocks{0};
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
};
