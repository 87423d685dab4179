#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../core/alloc.h"
#include "ops.h"

namespace hspmn::cpu {

void route_select(const float* n, int64_t B, int64_t S, int32_t routing, int64_t k, int64_t C, int32_t* indices,
                  int32_t* counts) {
    std::vector<int32_t, TrackedAllocator<int32_t>> order(static_cast<std::size_t>(S));
    for (int64_t b = 0; b < B; ++b) {
        const float* nb = n + b * S;
        int32_t* ib = indices + b * C;
        int64_t count = 0;
        if (routing == HSPMN_ROUTING_THRESHOLD) {
            for (int64_t s = 0; s < S; ++s)
                if (nb[s] > 0.0f) ib[count++] = static_cast<int32_t>(s);
        } else {
            // NaN ranks lowest so the order stays a strict weak ordering (NaN policy PROPAGATE).
            auto key = [&](int32_t s) {
                float v = nb[s];
                return std::isnan(v) ? -std::numeric_limits<float>::infinity() : v;
            };
            for (int64_t s = 0; s < S; ++s) order[s] = static_cast<int32_t>(s);
            auto better = [&](int32_t a, int32_t c) {
                float ka = key(a), kc = key(c);
                return ka > kc || (ka == kc && a < c);
            };
            std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), better);
            std::sort(order.begin(), order.begin() + k);
            for (int64_t j = 0; j < k; ++j) ib[j] = order[j];
            count = k;
        }
        for (int64_t j = count; j < C; ++j) ib[j] = -1;
        counts[b] = static_cast<int32_t>(count);
    }
}

}  // namespace hspmn::cpu
