// The plain arithmetic of data parallelism (native/README.md "Data parallelism"), kept apart from
// the model so ctest checks it directly: which gradients go into which all-reduce bucket, and which
// share of the flat parameter space each rank's optimizer owns under ZeRO-1.
#pragma once

#include <cstdint>
#include <vector>

namespace hspmn {

// Parameters whose gradients become final together (the final norm, one block, the embedding),
// given in the order backward finishes them.
struct DpGroup {
    std::vector<int> params;  // parameter indices
    int64_t bytes;            // their gradients' bytes
};

// One all-reduce: whole parameters, started once group `ready_after` finished.
struct DpBucket {
    std::vector<int> params;
    int ready_after;
    int64_t bytes;
};

// Groups in completion order packed greedily into buckets: a bucket closes as soon as it holds
// >= bucket_bytes (so one of about bucket_bytes, or a lone larger group), the last one at the end.
// Every parameter lands in exactly one bucket; buckets are in launch order.
std::vector<DpBucket> plan_buckets(const std::vector<DpGroup>& groups, int64_t bucket_bytes);

// ZeRO-1 shards of a flat space of `total` elements (the parameters in model order, back to back):
// every rank owns `chunk` = ceil(total / world) positions [rank * chunk, (rank + 1) * chunk), the
// last ones past `total` being padding, so every all-gather moves equal chunks.
int64_t shard_chunk(int64_t total, int world);

// A piece of one parameter inside a range of the flat space.
struct DpSegment {
    int param;
    int64_t begin;  // first element inside the parameter
    int64_t count;
    int64_t flat;   // its flat position
};

// The pieces of the parameters (flat offsets `offset`, sizes `numel`, back to back in index order)
// that lie in [lo, hi), in flat order.
std::vector<DpSegment> segments_in(const std::vector<int64_t>& offset, const std::vector<int64_t>& numel, int64_t lo,
                                   int64_t hi);

}  // namespace hspmn
