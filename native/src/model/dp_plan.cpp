#include "dp_plan.h"

#include <algorithm>

namespace hspmn {

std::vector<DpBucket> plan_buckets(const std::vector<DpGroup>& groups, int64_t bucket_bytes) {
    std::vector<DpBucket> out;
    DpBucket cur{{}, -1, 0};
    for (std::size_t g = 0; g < groups.size(); ++g) {
        cur.params.insert(cur.params.end(), groups[g].params.begin(), groups[g].params.end());
        cur.bytes += groups[g].bytes;
        cur.ready_after = static_cast<int>(g);
        if (cur.bytes >= bucket_bytes) {
            out.push_back(std::move(cur));
            cur = DpBucket{{}, -1, 0};
        }
    }
    if (!cur.params.empty()) out.push_back(std::move(cur));
    return out;
}

int64_t shard_chunk(int64_t total, int world) { return (total + world - 1) / world; }

std::vector<DpSegment> segments_in(const std::vector<int64_t>& offset, const std::vector<int64_t>& numel, int64_t lo,
                                   int64_t hi) {
    std::vector<DpSegment> out;
    for (std::size_t i = 0; i < offset.size(); ++i) {
        const int64_t a = std::max(lo, offset[i]), b = std::min(hi, offset[i] + numel[i]);
        if (a < b) out.push_back({static_cast<int>(i), a - offset[i], b - a, a});
    }
    return out;
}

}  // namespace hspmn
