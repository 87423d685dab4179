// The process-wide memo of gemm's algorithm choices and the HSPMN_GEMM_CACHE file (gemm_search.h).
// The memo is plain (untracked) host memory that lives as long as the process, like cuBLASLt's
// function table: a few hundred bytes per shape, never freed, so not in hspmn_alloc_stats.
#include <cuda_runtime.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <tuple>

#include "../core/error.h"
#include "device.h"
#include "gemm_search.h"

namespace hspmn::cuda {

bool GemmKey::operator<(const GemmKey& o) const {
    return std::tie(trans_a, trans_b, M, N, K, lda, ldb, ldc, c_type, align_a, align_b, align_c, accumulate) <
           std::tie(o.trans_a, o.trans_b, o.M, o.N, o.K, o.lda, o.ldb, o.ldc, o.c_type, o.align_a, o.align_b,
                    o.align_c, o.accumulate);
}

const char* const kGemmCacheHeader = "hspmn-gemm-cache 1";

const GemmSearchSettings& gemm_search_settings() {
    static const GemmSearchSettings s = [] {
        GemmSearchSettings r{kGemmSearchDefault ? GemmSearch::ON : GemmSearch::OFF, false, ""};
        if (const char* v = std::getenv("HSPMN_GEMM_SEARCH")) {
            if (std::strcmp(v, "0") == 0) r.mode = GemmSearch::OFF;
            else if (std::strcmp(v, "1") == 0) r.mode = GemmSearch::ON;
            else if (std::strcmp(v, "all") == 0) r.mode = GemmSearch::EVERY_SHAPE;
        }
        const char* log = std::getenv("HSPMN_GEMM_SEARCH_LOG");
        r.log = log && std::strcmp(log, "1") == 0;
        if (const char* path = std::getenv("HSPMN_GEMM_CACHE")) r.cache_path = path;
        return r;
    }();
    return s;
}

namespace {

struct Counts {
    std::atomic<int64_t> searched{0}, memo_hits{0}, file_hits{0}, failed{0};
};
Counts g_counts;

struct Entry {
    GemmChoice choice;
    bool from_file;  // not yet found among the heuristic's answers in this process
};

struct Memo {
    std::mutex mutex;
    bool file_read = false;
    std::map<std::pair<std::string, GemmKey>, Entry> entries;
};
Memo& memo() {
    static Memo m;
    return m;
}

// Lines that do not parse are skipped; a file that does not start with the header is ignored whole.
// Later lines win: a choice searched again (the file's was stale) was appended after the old one.
void read_file(Memo& m) {
    m.file_read = true;
    const GemmSearchSettings& s = gemm_search_settings();
    if (s.cache_path.empty()) return;
    std::FILE* f = std::fopen(s.cache_path.c_str(), "r");
    if (!f) return;  // not written yet
    std::string text;
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    std::fclose(f);
    std::istringstream in(text);
    std::string line;
    if (!std::getline(in, line) || line != kGemmCacheHeader) {
        if (s.log) std::fprintf(stderr, "hspmn gemm cache %s: no '%s' header, ignored\n", s.cache_path.c_str(),
                                kGemmCacheHeader);
        return;
    }
    int kept = 0, skipped = 0;
    while (std::getline(in, line)) {
        if (line.empty() || line == kGemmCacheHeader) continue;  // two processes may both start the file
        std::string device;
        GemmKey k{};
        GemmChoice c;
        if (!gemm_cache_parse(line, &device, &k, &c)) {
            ++skipped;
            continue;
        }
        m.entries[{device, k}] = Entry{c, true};
        ++kept;
    }
    if (s.log) std::fprintf(stderr, "hspmn gemm cache %s: %d choices read, %d malformed lines skipped\n",
                            s.cache_path.c_str(), kept, skipped);
}

// One write per line (O_APPEND), so processes appending at once do not interleave within a line.
void append_file(const std::string& line) {
    const GemmSearchSettings& s = gemm_search_settings();
    if (s.cache_path.empty()) return;
    std::FILE* f = std::fopen(s.cache_path.c_str(), "a");
    bool ok = f != nullptr;
    if (ok) {
        std::fseek(f, 0, SEEK_END);
        const std::string text = (std::ftell(f) == 0 ? std::string(kGemmCacheHeader) + "\n" : "") + line + "\n";
        ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
        ok = std::fclose(f) == 0 && ok;
    }
    static std::atomic<bool> warned{false};
    if (!ok && !warned.exchange(true))
        std::fprintf(stderr, "hspmn: HSPMN_GEMM_CACHE %s cannot be appended to (%s); gemm choices are not saved\n",
                     s.cache_path.c_str(), std::strerror(errno));
}

}  // namespace

GemmSearchCounts gemm_search_counts() {
    return {g_counts.searched.load(), g_counts.memo_hits.load(), g_counts.file_hits.load(), g_counts.failed.load()};
}

void gemm_count(GemmCount c) {
    switch (c) {
        case GemmCount::SEARCHED: ++g_counts.searched; break;
        case GemmCount::MEMO_HIT: ++g_counts.memo_hits; break;
        case GemmCount::FILE_HIT: ++g_counts.file_hits; break;
        case GemmCount::FAILED: ++g_counts.failed; break;
    }
}

std::string gemm_device_id(const Device& d, const CublasLt& lt) {
    cudaDeviceProp p{};
    check(cudaGetDeviceProperties(&p, d.ordinal), "cudaGetDeviceProperties");
    std::string name(p.name);
    for (char& ch : name)
        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') ch = '_';
    if (name.empty()) name = "unnamed";
    return format("%s/sm%d/%dsm/lt%zu", name.c_str(), d.arch, d.sm_count, lt.get_version());
}

MemoEntry gemm_memo_find(const std::string& device, const GemmKey& k, GemmChoice* out) {
    Memo& m = memo();
    std::lock_guard<std::mutex> lock(m.mutex);
    if (!m.file_read) read_file(m);
    auto it = m.entries.find({device, k});
    if (it == m.entries.end()) return MemoEntry::NONE;
    *out = it->second.choice;
    return it->second.from_file ? MemoEntry::FILE : MemoEntry::PROCESS;
}

GemmChoice gemm_memo_keep(const std::string& device, const GemmKey& k, const GemmChoice& c, bool save) {
    Memo& m = memo();
    std::string line;
    GemmChoice kept;
    {
        std::lock_guard<std::mutex> lock(m.mutex);
        auto [it, inserted] = m.entries.try_emplace({device, k}, Entry{c, false});
        if (!inserted && !it->second.from_file) return it->second.choice;
        it->second = Entry{c, false};
        kept = c;
        if (save) line = gemm_cache_format(device, k, c);
    }
    if (!line.empty()) append_file(line);
    return kept;
}

// <device> <ta> <tb> <M> <N> <K> <lda> <ldb> <ldc> <c_type> <align_a> <align_b> <align_c> <accumulate>
// <workspace> <the algorithm's bytes in hex>. cuBLASLt documents cublasLtMatmulAlgo_t as trivially
// serialisable for the same library version (the device id names it).
std::string gemm_cache_format(const std::string& device, const GemmKey& k, const GemmChoice& c) {
    std::string hex;
    const auto* bytes = reinterpret_cast<const unsigned char*>(&c.algo);
    for (std::size_t i = 0; i < sizeof(c.algo); ++i) hex += format("%02x", bytes[i]);
    return format("%s %d %d %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64
                  " %d %d %d %d %d %zu %s",
                  device.c_str(), k.trans_a, k.trans_b, k.M, k.N, k.K, k.lda, k.ldb, k.ldc, k.c_type, k.align_a,
                  k.align_b, k.align_c, k.accumulate, c.workspace, hex.c_str());
}

bool gemm_cache_parse(const std::string& line, std::string* device, GemmKey* k, GemmChoice* c) {
    std::istringstream in(line);
    std::string dev, hex, rest;
    int ta, tb, acc;
    GemmKey key{};
    GemmChoice ch;
    if (!(in >> dev >> ta >> tb >> key.M >> key.N >> key.K >> key.lda >> key.ldb >> key.ldc >> key.c_type >>
          key.align_a >> key.align_b >> key.align_c >> acc >> ch.workspace >> hex) ||
        (in >> rest))
        return false;
    auto bit = [](int v) { return v == 0 || v == 1; };
    if (!bit(ta) || !bit(tb) || !bit(acc) || key.M <= 0 || key.N <= 0 || key.K <= 0 || key.lda <= 0 ||
        key.ldb <= 0 || key.ldc <= 0 || (key.c_type != static_cast<int>(DType::BF16) &&
                                         key.c_type != static_cast<int>(DType::F32)) ||
        key.align_a <= 0 || key.align_b <= 0 || key.align_c <= 0 || ch.workspace > Device::kWorkspaceBytes ||
        hex.size() != 2 * sizeof(ch.algo))
        return false;
    auto* bytes = reinterpret_cast<unsigned char*>(&ch.algo);
    for (std::size_t i = 0; i < sizeof(ch.algo); ++i) {
        unsigned v = 0;
        for (int j = 0; j < 2; ++j) {
            const char h = hex[2 * i + j];
            const int nib = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : -1;
            if (nib < 0) return false;
            v = v * 16 + static_cast<unsigned>(nib);
        }
        bytes[i] = static_cast<unsigned char>(v);
    }
    key.trans_a = ta == 1;
    key.trans_b = tb == 1;
    key.accumulate = acc == 1;
    *device = dev;
    *k = key;
    *c = ch;
    return true;
}

}  // namespace hspmn::cuda
