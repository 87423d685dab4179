// sample_tokens on the CPU: native/README.md "Sampling", row by row on the pool. The masses are
// integers, so the order of every sum below is free; what is fixed is which tokens are kept and the
// id order in which the draw walks them. Compiled with -ffp-contract=off (core/sampling.h says why).
#include <algorithm>
#include <functional>

#include "../core/sampling.h"
#include "ops.h"

namespace hspmn::cpu {

namespace {

using namespace hspmn::sampling;

int64_t id_of(uint64_t k) { return static_cast<int64_t>(0xFFFF - (k & 0xFFFF)); }

// The key of the last token of the shortest key prefix of keys[0 .. n) whose mass reaches need (<= their
// total): a weighted quickselect, linear time where a sort would be n log n; exact, the masses being
// integers, so the partition order cannot matter. Reorders keys.
uint64_t nucleus_end(uint64_t* keys, int64_t n, uint64_t need, const uint64_t* mass_of) {
    int64_t lo = 0, hi = n;
    while (hi - lo > 16) {
        std::swap(keys[lo + (hi - lo) / 2], keys[hi - 1]);
        const uint64_t pivot = keys[hi - 1];
        int64_t j = lo;
        uint64_t upper = 0;  // mass of the keys above the pivot
        for (int64_t i = lo; i < hi - 1; ++i) {
            if (keys[i] > pivot) {
                upper += mass_of[id_of(keys[i])];
                std::swap(keys[i], keys[j++]);
            }
        }
        std::swap(keys[hi - 1], keys[j]);
        if (upper >= need) {
            hi = j;
        } else {
            const uint64_t through = upper + mass_of[id_of(pivot)];
            if (through >= need) return pivot;
            need -= through;
            lo = j + 1;
        }
    }
    std::sort(keys + lo, keys + hi, std::greater<uint64_t>());
    for (int64_t i = lo; i < hi; ++i) {
        const uint64_t q = mass_of[id_of(keys[i])];
        if (q >= need) return keys[i];
        need -= q;
    }
    return keys[hi - 1];  // unreachable: need <= the total of keys[0 .. n)
}

// The token of one row, or Backend::kSample* for a bad row. mass, keys: [V] scratch.
int32_t sample_row(const float* x, int64_t V, const hspmn_sampling_params& p, uint64_t* mass_of, uint64_t* keys) {
    float m = -__builtin_inff();
    bool nan = false, pos_inf = false;
    for (int64_t i = 0; i < V; ++i) {
        const float v = x[i];
        if (v != v) nan = true;
        else if (v == __builtin_inff()) pos_inf = true;
        else if (v > m) m = v;
    }
    if (nan) return -1;
    if (pos_inf) return -2;
    if (m == -__builtin_inff()) return -3;
    if (p.temperature == 0.0f) {
        for (int64_t i = 0; i < V; ++i)
            if (x[i] == m) return static_cast<int32_t>(i);
    }
    const float inv_t = 1.0f / p.temperature;
    for (int64_t i = 0; i < V; ++i) mass_of[i] = mass(x[i], m, inv_t);

    const bool cut_k = p.top_k > 0 && p.top_k < V;
    const bool cut_p = p.top_p < 1.0f;
    uint64_t threshold = 0;  // the kept tokens are those with key >= threshold
    if (cut_k || cut_p) {
        for (int64_t i = 0; i < V; ++i) keys[i] = key(x[i], i);
        int64_t kept = V;
        if (cut_k) {
            kept = p.top_k;
            std::nth_element(keys, keys + (kept - 1), keys + V, std::greater<uint64_t>());
            threshold = keys[kept - 1];  // the k largest keys are keys[0 .. k)
        }
        if (cut_p) {
            uint64_t total = 0;
            int64_t positive = 0;  // massless tokens never complete the nucleus: sort the others only
            for (int64_t j = 0; j < kept; ++j) {
                const uint64_t q = mass_of[id_of(keys[j])];
                total += q;
                if (q > 0) keys[positive++] = keys[j];
            }
            threshold = nucleus_end(keys, positive, nucleus_need(p.top_p, total), mass_of);
        }
    }
    uint64_t total = 0;
    for (int64_t i = 0; i < V; ++i)
        if (threshold == 0 || key(x[i], i) >= threshold) total += mass_of[i];
    const uint64_t target = draw_target(draw_bits(p.seed, p.draw), total);
    uint64_t acc = 0;
    for (int64_t i = 0; i < V; ++i) {
        if (threshold != 0 && key(x[i], i) < threshold) continue;
        acc += mass_of[i];
        if (acc > target) return static_cast<int32_t>(i);
    }
    return -4;  // unreachable: target < total and the walk ends at total
}

}  // namespace

void sample_tokens(ThreadPool& pool, const float* logits, int64_t n, int64_t V, const hspmn_sampling_params* params,
                   int32_t* tokens, int32_t* status, uint64_t* scratch) {
    pool.parallel_for(n, 1, [&](int64_t begin, int64_t end, int worker) {
        uint64_t* mass_of = scratch + 2 * V * worker;
        for (int64_t r = begin; r < end; ++r)
            tokens[r] = sample_row(logits + r * V, V, params[r], mass_of, mass_of + V);
    });
    int32_t s = 0;
    for (int64_t r = 0; r < n && s == 0; ++r)
        if (tokens[r] < 0) s = static_cast<int32_t>(r + 1);
    *status = s;
}

}  // namespace hspmn::cpu
