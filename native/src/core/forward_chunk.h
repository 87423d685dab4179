// How an inference forward of many rows is cut into chunks (native/README.md "Memory of a long
// forward"). Only K and V of the earlier rows of a sequence and its conv tail outlive a chunk, so the
// scratch is bounded by the chunk, not by B * S.
#pragma once

#include <cstdint>

namespace hspmn {

// A forward whose one-pass scratch would pass kOnePassBytes runs in chunks. Sequences whose own
// one-pass scratch fits it go in groups of whole sequences (each group one pass: as fast as the one
// pass, the GEMMs' M stays in the tens of thousands); a longer sequence is cut into chunks of
// consecutive rows whose scratch fits kSplitChunkBytes. At the 1B shape (D 2048, F 8192) on CUDA that
// is about 167,000 rows in one pass (B=1 up to S=131,072, and B=64 at S=4,096 in groups of 40, keep the
// one pass's speed: with 8 GiB, S=131,072 ran split and slower) and 5,888 rows per chunk of a longer
// sequence, which keeps one block at S = 1,048,576 within issue 9's 12 GB with the caller's x and out
// (4 GiB each) counted. Measured: BENCHMARKS.md "Long prompts in bounded memory".
constexpr int64_t kOnePassBytes = int64_t{16} << 30;
constexpr int64_t kSplitChunkBytes = int64_t{512} << 20;

struct ForwardChunks {
    int64_t whole_rows;  // at most this many rows in one pass (also a group of whole sequences)
    int64_t split_rows;  // rows per chunk of a sequence longer than whole_rows
};

// For a backend whose one-pass forward takes one_pass_row_bytes of scratch per row and whose chunk
// of a split sequence takes split_row_bytes per row; each count is rounded down to a multiple of 256
// (at least 256). The environment variable HSPMN_FORWARD_CHUNK_ROWS (a positive integer) sets both,
// so tests can force several chunks of odd sizes at small shapes. Throws Error{INVALID_ARGUMENT} for
// a malformed value.
ForwardChunks forward_chunks(int64_t one_pass_row_bytes, int64_t split_row_bytes);

}  // namespace hspmn
