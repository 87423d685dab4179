// What the command-line tools share: reading option values, the model's shape options, the exit after
// an options error, the context, reporting a failed call, and the JSON output file. The tools use the
// public C ABI only (hspmn.h), as any program linking the library would.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "hspmn.h"

namespace hspmn_tool {

// Prints "<tool>: <what> failed: <status>: <last error>" unless s is HSPMN_OK; true when it is.
inline bool check(const char* tool, hspmn_status s, const char* what) {
    if (s == HSPMN_OK) return true;
    std::fprintf(stderr, "%s: %s failed: %s: %s\n", tool, what, hspmn_status_name(s), hspmn_last_error());
    return false;
}

// A whole decimal integer in [lo, hi].
inline bool parse_int(const std::string& s, int64_t lo, int64_t hi, int64_t* out) {
    if (s.empty()) return false;
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

// The same into a narrower integer (hi must fit it).
template <class T>
bool parse_int(const std::string& s, int64_t lo, int64_t hi, T* out) {
    int64_t v = 0;
    if (!parse_int(s, lo, hi, &v)) return false;
    *out = static_cast<T>(v);
    return true;
}

// A decimal number, nothing after it (strtof for a float, so it rounds once).
inline bool parse_number(const std::string& s, double* out) {
    char* end = nullptr;
    *out = std::strtod(s.c_str(), &end);
    return !s.empty() && !*end;
}
inline bool parse_number(const std::string& s, float* out) {
    char* end = nullptr;
    *out = std::strtof(s.c_str(), &end);
    return !s.empty() && !*end;
}

// The items of a comma-separated list ("a,b,c"); an empty item stays (and fails the caller's check).
inline std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> items;
    for (std::size_t p = 0; p <= s.size();) {
        const std::size_t q = std::min(s.find(',', p), s.size());
        items.push_back(s.substr(p, q - p));
        p = q + 1;
    }
    return items;
}

// When `option` is one of the table's names, parses `value` into its int (a count in [0, 2^30]) and
// sets *ok to whether that worked; false when the option is not in the table.
inline bool take_count(const std::string& option, const std::string& value,
                       std::initializer_list<std::pair<const char*, int*>> table, bool* ok) {
    for (const auto& [name, dst] : table) {
        if (option != name) continue;
        *ok = parse_int(value, 0, int64_t{1} << 30, dst);
        return true;
    }
    return false;
}

// "cpu", "cuda" or "auto" as a hspmn_backend.
inline bool parse_backend(const std::string& v, int32_t* out) {
    if (v == "cpu") *out = HSPMN_BACKEND_CPU;
    else if (v == "cuda") *out = HSPMN_BACKEND_CUDA;
    else if (v == "auto") *out = HSPMN_BACKEND_AUTO;
    else return false;
    return true;
}

inline const char* backend_name(int32_t b) {
    return b == HSPMN_BACKEND_CPU ? "cpu" : b == HSPMN_BACKEND_CUDA ? "cuda" : "auto";
}

// The language model's shape; the default is the paper's 1B model (24 layers, D=2048, H=16, Hkv=4,
// mlp_ratio 4, V=256).
struct ModelShape {
    int layers = 24, dim = 2048, heads = 16, kv_heads = 4, mlp_ratio = 4, vocab = 256;

    // Takes --layers, --dim, --heads, --kv-heads, --mlp-ratio and --vocab: false when `option` is none
    // of them, else *ok says whether `value` was usable.
    bool parse(const std::string& option, const std::string& value, bool* ok) {
        return take_count(option, value,
                          {{"--layers", &layers}, {"--dim", &dim}, {"--heads", &heads}, {"--kv-heads", &kv_heads},
                           {"--mlp-ratio", &mlp_ratio}, {"--vocab", &vocab}},
                          ok);
    }

    double ffn() const { return static_cast<double>(dim) * mlp_ratio; }
    double kv_dim() const { return static_cast<double>(dim) / heads * kv_heads; }

    // hspmn_model_params of this shape at routing density rho (the other fields at their defaults).
    hspmn_model_params params(float rho) const {
        hspmn_model_params mp = hspmn_model_default_params();
        mp.vocab_size = vocab;
        mp.num_layers = layers;
        mp.block.dim = dim;
        mp.block.num_heads = heads;
        mp.block.num_kv_heads = kv_heads;
        mp.block.mlp_ratio = mlp_ratio;
        mp.block.sparsity_k = rho;
        return mp;
    }

    // "D=2048 H=16 Hkv=4 F=8192 V=256", for the tools' headers.
    std::string describe() const {
        return "D=" + std::to_string(dim) + " H=" + std::to_string(heads) + " Hkv=" + std::to_string(kv_heads) +
               " F=" + std::to_string(dim * mlp_ratio) + " V=" + std::to_string(vocab);
    }

    // The shape's JSON fields, without braces: "layers": 24, "dim": 2048, ...
    std::string json_fields() const {
        return "\"layers\": " + std::to_string(layers) + ", \"dim\": " + std::to_string(dim) +
               ", \"heads\": " + std::to_string(heads) + ", \"kv_heads\": " + std::to_string(kv_heads) +
               ", \"mlp_ratio\": " + std::to_string(mlp_ratio) + ", \"vocab\": " + std::to_string(vocab);
    }
};

// Walks the "--option value" pairs of the command line through take(option, value, &ok), which
// returns false for an option it does not know and sets ok to whether the value was usable. Returns
// "help" for --help or -h, else why the command line is unusable, else "".
template <class Take>
std::string parse_options(int argc, char** argv, Take take) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") return "help";
        if (a.rfind("--", 0) != 0 || i + 1 >= argc) return "expected --option value, got '" + a + "'";
        const std::string v = argv[++i];
        bool ok = true;
        if (!take(a, v, &ok)) return "unknown option " + a;
        if (!ok) return "bad value '" + v + "' for " + a;
    }
    return "";
}

// After parsing the options: "" goes on (-1); "help" prints the usage and exits 0; a message is
// printed with the usage and exits 2.
inline int options_exit(const std::string& err, const char* tool, const char* usage) {
    if (err.empty()) return -1;
    if (err == "help") {
        std::fputs(usage, stdout);
        return 0;
    }
    std::fprintf(stderr, "%s: %s\n%s", tool, err.c_str(), usage);
    return 2;
}

inline hspmn_context_params context_params(int32_t backend, int32_t threads) {
    hspmn_context_params cp = hspmn_context_default_params();
    cp.backend = backend;
    cp.num_threads = threads;
    return cp;
}

// A context for cp, and the backend it resolved to; null after saying why.
inline hspmn_context* open_context(const char* tool, const hspmn_context_params& cp, int32_t* resolved) {
    hspmn_context* ctx = nullptr;
    if (!check(tool, hspmn_context_create(&cp, &ctx), "hspmn_context_create")) return nullptr;
    if (!check(tool, hspmn_context_backend(ctx, resolved), "hspmn_context_backend")) {
        hspmn_context_destroy(ctx);
        return nullptr;
    }
    return ctx;
}

// The --json file opened for writing; null after saying why.
inline FILE* open_json(const char* tool, const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "w");
    if (!f) std::fprintf(stderr, "%s: cannot write --json %s: %s\n", tool, path.c_str(), std::strerror(errno));
    return f;
}

// Opens the --json file and writes what every tool's JSON object starts with: its mode, the backend
// and the model's shape, then ", " for the tool's own fields; null after saying why it could not.
inline FILE* begin_json(const char* tool, const std::string& path, const char* mode, int32_t backend,
                        const ModelShape& shape) {
    FILE* f = open_json(tool, path);
    if (f)
        std::fprintf(f, "{\"mode\": \"%s\", \"backend\": \"%s\", %s, ", mode, backend_name(backend),
                     shape.json_fields().c_str());
    return f;
}

// Closes the --json file; false (after saying so) when the writes did not all reach it.
inline bool close_json(const char* tool, FILE* f, const std::string& path) {
    const bool written = !std::ferror(f);
    const bool ok = std::fclose(f) == 0 && written;
    if (!ok) std::fprintf(stderr, "%s: writing --json %s failed\n", tool, path.c_str());
    return ok;
}

// A --json file of one record: begin_json's fields, then fmt's (printf-style, ending the object), then
// close_json. True when there is no --json or the record reached it.
__attribute__((format(printf, 6, 7))) inline bool write_json(const char* tool, const std::string& path,
                                                              const char* mode, int32_t backend,
                                                              const ModelShape& shape, const char* fmt, ...) {
    if (path.empty()) return true;
    FILE* f = begin_json(tool, path, mode, backend, shape);
    if (!f) return false;
    va_list args;
    va_start(args, fmt);
    std::vfprintf(f, fmt, args);
    va_end(args);
    return close_json(tool, f, path);
}

// s as a JSON string literal, quotes included.
inline std::string json_string(const std::string& s) {
    std::string o = "\"";
    for (unsigned char ch : s) {
        if (ch == '"' || ch == '\\') {
            o += '\\';
            o += static_cast<char>(ch);
        } else if (ch < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", ch);
            o += buf;
        } else {
            o += static_cast<char>(ch);
        }
    }
    return o + "\"";
}

inline double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace hspmn_tool
