// dropout_rows: the residual dropout of native/README.md "Residual dropout", applied in place to rows
// of one branch (m of every token, o of the selected ones). The mask is a pure function of the key and
// the element's (b, s, d), so backward redraws it instead of keeping it, and any thread split draws
// the same one.
#include "../core/philox.h"
#include "ops.h"

namespace hspmn::cpu {

void dropout_rows(ThreadPool& pool, const DropoutKey& key, uint32_t tag, int64_t S, const int64_t* rows, int64_t n,
                  int64_t D, float* v) {
    const uint32_t threshold = dropout_threshold(key.p);
    const float scale = dropout_scale(key.p);
    pool.parallel_for(n, 16, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) {
            const int64_t tok = rows ? rows[i] : i, b = tok / S, s = tok - b * S;
            float* row = v + i * D;
            for (int64_t d4 = 0; d4 * 4 < D; ++d4) {
                const Philox4x32 r = dropout_bits(key, tag, b, s, d4);
                for (int64_t j = 0; j < 4 && d4 * 4 + j < D; ++j)
                    row[d4 * 4 + j] = r.v[j] >= threshold ? row[d4 * 4 + j] * scale : 0.0f;
            }
        }
    });
}

}  // namespace hspmn::cpu
