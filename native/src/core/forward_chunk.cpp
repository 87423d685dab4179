#include "forward_chunk.h"

#include <cerrno>
#include <cstdlib>

#include "error.h"

namespace hspmn {

namespace {

int64_t rows_within(int64_t budget, int64_t bytes_per_row) {
    const int64_t rows = budget / (bytes_per_row > 0 ? bytes_per_row : 1);
    return rows < 256 ? 256 : rows / 256 * 256;
}

}  // namespace

ForwardChunks forward_chunks(int64_t one_pass_row_bytes, int64_t split_row_bytes) {
    // Read at every forward (not cached): a test sets and clears it between calls.
    if (const char* e = std::getenv("HSPMN_FORWARD_CHUNK_ROWS")) {
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(e, &end, 10);
        if (errno || end == e || *end || v < 1)
            fail(HSPMN_ERR_INVALID_ARGUMENT, "HSPMN_FORWARD_CHUNK_ROWS=%s: expected a positive integer (rows per "
                 "chunk of an inference forward)", e);
        return {v, v};
    }
    return {rows_within(kOnePassBytes, one_pass_row_bytes), rows_within(kSplitChunkBytes, split_row_bytes)};
}

}  // namespace hspmn
