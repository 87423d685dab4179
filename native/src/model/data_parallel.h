// What a model keeps while a communicator is attached (Model::dp_, data_parallel.cpp).
#pragma once

#include <vector>

#include "../comm/comm.h"
#include "dp_plan.h"
#include "model.h"

namespace hspmn {

struct DataParallel : Tracked {
    DataParallel(Backend& be) : zm(be), zv(be), window(be) {}
    Comm* comm = nullptr;
    hspmn_data_parallel_params params{};
    std::vector<DpBucket> buckets;  // launch order
    std::size_t next_bucket = 0;    // of the backward under way
    int64_t grad_bytes = 0;
    // ZeRO-1 (params.shard_optimizer): this rank's share [lo, lo + chunk) of the flat space, its
    // pieces of the parameters, and its moments [chunk] f32 (the parameters' own m, v are freed).
    std::vector<int64_t> offset, numel;  // every parameter's flat offset and size
    int64_t total = 0, chunk = 0, lo = 0;
    std::vector<DpSegment> mine;
    RawBuffer zm, zv;
    RawBuffer window;  // the all-gather's [world, window elements] f32 (bf16 values reuse it)
    int64_t window_elems = 0;
    int64_t backwards = 0;
    CommTiming last;
};

}  // namespace hspmn
