// How many rows an inference forward runs at once (native/README.md "Memory of a long forward").
// A forward of more rows runs them in chunks: only K and V of the earlier rows of a sequence and
// its conv tail outlive a chunk, so the scratch is bounded by the chunk, not by B * S.
#pragma once

#include <cstdint>

namespace hspmn {

// The scratch a chunk may take: the rows per chunk are kForwardChunkBytes / (a backend's scratch
// bytes per row), rounded down to a multiple of 256 and at least 256. 256 MiB keeps one block of the
// 1B shape (D 2048, F 8192: ~86 KiB per row on the GPU, so ~2,800 rows, GEMMs of M ~2,800, still
// near full speed) at S = 1,048,576 under 12 GB with the caller's x and out counted.
constexpr int64_t kForwardChunkBytes = int64_t{256} << 20;

// Rows per chunk for a backend whose chunk scratch is bytes_per_row per row; the environment
// variable HSPMN_FORWARD_CHUNK_ROWS (a positive integer) overrides it, so tests can force several
// chunks of odd sizes at small shapes. Throws Error{INVALID_ARGUMENT} for a malformed value.
int64_t forward_chunk_rows(int64_t bytes_per_row);

}  // namespace hspmn
