// How gemm (runtime.h, gemm.cpp) chooses its cuBLASLt algorithm per shape: the key a choice is kept
// under, the process-wide memo that makes every context of the process choose alike, the
// HSPMN_GEMM_CACHE file that carries choices to later processes (gemm_memo.cpp), and the timing of
// the heuristic's candidates on the call's own operands (gemm_search.cpp). README.md "GEMM algorithms".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cublaslt.h"
#include "runtime.h"

namespace hspmn::cuda {

// The search's defaults, one place: off unless HSPMN_GEMM_SEARCH says otherwise. On the H100 the
// block ran slower with the searched algorithms than with the heuristic's first answers (B=64 S=4096
// inference 4.85-5.05 vs 5.18-5.23 M tok/s, S=131072 2.26-2.28 vs 2.35-2.37, training equal; three
// runs each, BENCHMARKS.md): the search times each candidate alone, back to back, which is not how
// it runs in the block. Only GEMMs of at least kGemmSearchMinFlops (2 M N K) are timed when it is
// on, because below it the search's host waits cost more than a better algorithm saves and shapes
// that vary per call (decode, prompts) are small.
inline constexpr bool kGemmSearchDefault = false;
inline constexpr double kGemmSearchMinFlops = 1e11;
// How many of the heuristic's answers are candidates.
inline constexpr int kGemmCandidates = 8;

// What the descriptors and the heuristic's answers depend on; pointer alignment included, because an
// algorithm picked for 256-byte aligned operands may not run on an offset view.
struct GemmKey {
    bool trans_a, trans_b;
    int64_t M, N, K, lda, ldb, ldc;
    int c_type;
    int align_a, align_b, align_c;
    bool accumulate;
    bool operator<(const GemmKey& o) const;
};

struct GemmChoice {
    cublasLtMatmulAlgo_t algo{};
    std::size_t workspace = 0;
};

// One plan's cuBLASLt descriptors (cuBLASLt's A is our B: gemm.cpp's header comment).
struct GemmDescs {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
};

// The process's settings, read from the environment once.
enum class GemmSearch { OFF, ON, EVERY_SHAPE };
struct GemmSearchSettings {
    GemmSearch mode;         // HSPMN_GEMM_SEARCH: "0" OFF, "1" ON, "all" EVERY_SHAPE; unset kGemmSearchDefault
    bool log;                // HSPMN_GEMM_SEARCH_LOG=1: a line per searched shape on stderr
    std::string cache_path;  // HSPMN_GEMM_CACHE, empty when unset
};
const GemmSearchSettings& gemm_search_settings();

// Process-wide counts, for tests and benchmarks.
struct GemmSearchCounts {
    int64_t searched;     // shapes timed here
    int64_t memo_hits;    // plans that took a choice this process had made (any context)
    int64_t file_hits;    // plans that took a choice from HSPMN_GEMM_CACHE
    int64_t failed;       // candidates skipped because their launch failed
};
GemmSearchCounts gemm_search_counts();

// ---- gemm_memo.cpp ----

// The name a choice is kept under: the GPU model (name without blanks, compute capability, SMs) and
// the cuBLASLt version, so every device of the same model in the process shares choices, and a cache
// file written with another library or GPU never matches.
std::string gemm_device_id(const Device& d, const CublasLt& lt);

enum class MemoEntry { NONE, PROCESS, FILE };
// The choice kept for (device, key): PROCESS when made in this process (use it as is), FILE when it
// came from HSPMN_GEMM_CACHE (read on the first call) and is still to be found among the heuristic's
// answers, NONE else.
MemoEntry gemm_memo_find(const std::string& device, const GemmKey& k, GemmChoice* out);
// Keeps c for (device, key) unless a PROCESS choice stands there already (another context searched the
// same shape at the same time), and returns the one that stands: the first choice made wins, so every
// context of the process uses the same algorithm. A new choice is appended to the cache file when
// `save` (a search's), not when it came from the file.
GemmChoice gemm_memo_keep(const std::string& device, const GemmKey& k, const GemmChoice& c, bool save);
enum class GemmCount { SEARCHED, MEMO_HIT, FILE_HIT, FAILED };
void gemm_count(GemmCount c);

// The cache file's lines (exposed for the tests): the header, and one choice per line.
extern const char* const kGemmCacheHeader;
std::string gemm_cache_format(const std::string& device, const GemmKey& k, const GemmChoice& c);
// False for anything but a whole, well-formed line.
bool gemm_cache_parse(const std::string& line, std::string* device, GemmKey* k, GemmChoice* c);

// ---- gemm_search.cpp ----

// The call's operands; the search reads A, B (and C when beta != 0) and writes only where the call
// itself will write over: C when beta == 0, else a scratch D of C's layout.
struct GemmOperands {
    const void* A;
    const void* B;
    void* C;
    float alpha, beta;
};
// Times each candidate (one warm-up, then a few launches between two events) on the stream and
// returns the index of the fastest (one less than 1 % faster than an earlier candidate does not
// count), kGemmNoneRan when every launch failed, or kGemmNoScratch when the scratch D did not fit
// in device memory. Waits for the stream. A launch that fails is skipped (and counted); a sticky
// error throws as check_lt does.
inline constexpr int kGemmNoneRan = -1, kGemmNoScratch = -2;
int gemm_time_candidates(Device& d, const GemmKey& k, const GemmDescs& descs,
                         const std::vector<cublasLtMatmulHeuristicResult_t>& candidates, const GemmOperands& ops);

}  // namespace hspmn::cuda
