// test_backend_ops: every case of the registry (registry.cpp) on every available backend, compared
// with the CPU backend's result by normalised MSE, nmse = sum (got - cpu)^2 / sum cpu^2, against the
// bound of the tested backend's precision for that output from native/reference/tolerances.json
// (nmse <= bound^2, bound being the relative-norm error ||got - cpu|| / ||cpu||; EXACT outputs must be
// equal). The CPU backend itself is checked against the PyTorch reference by
// native/reference/check_backend_ops.py, from what --dump writes.
//
//   test_backend_ops [--op SUBSTRING] [--require cuda] [--emulate-bf16] [--tolerances FILE] [--list]
//   test_backend_ops --dump DIR      # DIR/manifest.json + one .bin per array (cases, CPU outputs)
//
// Without --require, a backend that is not built or has no device is reported and skipped (exit 0);
// ci/gpu.sh passes --require cuda so a GPU run cannot pass without running the CUDA ops.
// --emulate-bf16 adds a backend "cpu_bf16": the CPU ops with every float output rounded to bf16 and
// tagged bf16, so a machine without a GPU runs the comparison itself (ctest does) and shows what bf16
// storage alone costs against the bound.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "../../src/core/bf16.h"
#include "backend_ops.h"

#ifndef HSPMN_TOLERANCES
#define HSPMN_TOLERANCES "native/reference/tolerances.json"
#endif

using namespace hspmn::backend_ops;

namespace {

// The number after "key": in the tolerance file (flat keys, one rule for Java, Python and this test).
double tolerance(const std::string& text, const char* key, const std::string& path) {
    const std::string k = std::string("\"") + key + "\"";
    std::size_t at = text.find(k);
    if (at == std::string::npos || (at = text.find(':', at)) == std::string::npos) {
        std::fprintf(stderr, "%s has no \"%s\"\n", path.c_str(), key);
        std::exit(2);
    }
    const double v = std::strtod(text.c_str() + at + 1, nullptr);
    if (!(v > 0 && v < 1)) {
        std::fprintf(stderr, "%s: \"%s\" is not a bound in (0, 1)\n", path.c_str(), key);
        std::exit(2);
    }
    return v;
}

OpBackend emulated_bf16(const OpBackend& cpu) {
    return OpBackend{"cpu_bf16", [cpu](const Case& c, std::vector<Array>& out, std::string& why) {
                         if (!cpu.run(c, out, why)) return false;
                         for (Array& a : out) {
                             if (a.is_int) continue;
                             for (float& x : a.f) x = hspmn::bf16_to_f32(hspmn::f32_to_bf16(x));
                             a.prec = Prec::BF16;
                         }
                         return true;
                     }};
}

std::string json_escape(const std::string& s) {
    std::string o;
    for (char ch : s) o += (ch == '"' || ch == '\\') ? std::string("\\") + ch : std::string(1, ch);
    return o;
}

void write_array(const std::string& dir, const std::string& file, const Array& a) {
    std::ofstream f(dir + "/" + file, std::ios::binary);
    if (a.is_int)
        f.write(reinterpret_cast<const char*>(a.i.data()), static_cast<std::streamsize>(a.i.size() * 4));
    else
        f.write(reinterpret_cast<const char*>(a.f.data()), static_cast<std::streamsize>(a.f.size() * 4));
    if (!f) {
        std::fprintf(stderr, "cannot write %s/%s\n", dir.c_str(), file.c_str());
        std::exit(2);
    }
}

std::string array_json(const Array& a, const std::string& file) {
    std::ostringstream s;
    s << "{\"name\": \"" << a.name << "\", \"dtype\": \"" << (a.is_int ? "i32" : "f32") << "\", \"prec\": \""
      << prec_name(a.prec) << "\", \"file\": \"" << file << "\", \"shape\": [";
    for (std::size_t k = 0; k < a.shape.size(); ++k) s << (k ? ", " : "") << a.shape[k];
    s << "]}";
    return s.str();
}

// Cases, their inputs and the CPU backend's outputs, for check_backend_ops.py.
int dump(const std::vector<Case>& cases, const std::string& dir) {
    OpBackend cpu = cpu_backend();
    std::ostringstream m;
    m.precision(17);
    m << "{\"cases\": [\n";
    int n = 0;
    for (const Case& c : cases) {
        std::vector<Array> out;
        std::string why;
        if (!cpu.run(c, out, why)) {
            std::fprintf(stderr, "%s: %s\n", c.name.c_str(), why.c_str());
            return 1;
        }
        std::string stem = c.name;
        for (char& ch : stem)
            if (ch == '/') ch = '.';
        m << (n++ ? ",\n" : "") << "{\"op\": \"" << c.op << "\", \"name\": \"" << json_escape(c.name)
          << "\", \"params\": {";
        int k = 0;
        for (const auto& [key, v] : c.p) m << (k++ ? ", " : "") << "\"" << key << "\": " << v;
        m << "}, \"inputs\": [";
        k = 0;
        for (const Array& a : c.in) {
            const std::string file = stem + ".in." + a.name + ".bin";
            write_array(dir, file, a);
            m << (k++ ? ", " : "") << array_json(a, file);
        }
        m << "], \"outputs\": [";
        k = 0;
        for (const Array& a : out) {
            const std::string file = stem + ".out." + a.name + ".bin";
            write_array(dir, file, a);
            m << (k++ ? ", " : "") << array_json(a, file);
        }
        m << "]}";
    }
    m << "\n]}\n";
    std::ofstream f(dir + "/manifest.json");
    f << m.str();
    if (!f) {
        std::fprintf(stderr, "cannot write %s/manifest.json\n", dir.c_str());
        return 2;
    }
    std::printf("wrote %d cases to %s\n", n, dir.c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::string dump_dir, filter, require, tol_path = HSPMN_TOLERANCES;
    bool list = false, emulate = false;
    for (int a = 1; a < argc; ++a) {
        const std::string arg = argv[a];
        auto value = [&]() -> std::string {
            if (a + 1 >= argc) {
                std::fprintf(stderr, "%s needs a value\n", arg.c_str());
                std::exit(2);
            }
            return argv[++a];
        };
        if (arg == "--dump") dump_dir = value();
        else if (arg == "--op") filter = value();
        else if (arg == "--require") require = value();
        else if (arg == "--tolerances") tol_path = value();
        else if (arg == "--list") list = true;
        else if (arg == "--emulate-bf16") emulate = true;
        else {
            std::fprintf(stderr,
                         "usage: %s [--op SUBSTRING] [--require cuda] [--emulate-bf16] [--tolerances FILE] [--list]\n"
                         "       %s --dump DIR\n",
                         argv[0], argv[0]);
            return 2;
        }
    }
    std::vector<Case> cases;
    for (Case& c : registry())
        if (filter.empty() || c.name.find(filter) != std::string::npos) cases.push_back(std::move(c));
    if (list) {
        for (const Case& c : cases) std::printf("%s\n", c.name.c_str());
        return 0;
    }
    if (!dump_dir.empty()) return dump(cases, dump_dir);

    std::ifstream tf(tol_path);
    if (!tf) {
        std::fprintf(stderr, "cannot read the tolerance file %s (--tolerances FILE)\n", tol_path.c_str());
        return 2;
    }
    std::stringstream ts;
    ts << tf.rdbuf();
    const double bound_f32 = tolerance(ts.str(), "f32", tol_path), bound_bf16 = tolerance(ts.str(), "bf16", tol_path);

    OpBackend cpu = cpu_backend();
    std::vector<OpBackend> others;
    std::string why;
    OpBackend cuda = cuda_backend(why);
    if (cuda.run) {
        others.push_back(cuda);
    } else {
        std::printf("cuda: %s\n", why.c_str());
        if (require == "cuda") {
            std::printf("FAIL: --require cuda, and the CUDA backend cannot run here\n");
            return 1;
        }
    }
    if (emulate) others.push_back(emulated_bf16(cpu));
    if (!require.empty() && require != "cuda") {
        std::fprintf(stderr, "--require: unknown backend %s\n", require.c_str());
        return 2;
    }
    if (others.empty()) {
        std::printf("no backend besides the CPU to compare (%zu cases registered; the CPU against the reference: "
                    "native/reference/check_backend_ops.py)\n", cases.size());
        return 0;
    }

    int failures = 0, checks = 0;
    std::printf("%-8s %-58s %-8s %-5s %10s %10s  %s\n", "backend", "case", "output", "prec", "nmse", "bound", "");
    for (const Case& c : cases) {
        std::vector<Array> ref;
        std::string cpu_why;
        if (!cpu.run(c, ref, cpu_why)) {
            std::printf("%-8s %-58s FAIL: %s\n", "cpu", c.name.c_str(), cpu_why.c_str());
            ++failures;
            continue;
        }
        for (const OpBackend& b : others) {
            std::vector<Array> got;
            std::string bwhy;
            bool ran;
            try {
                ran = b.run(c, got, bwhy);
            } catch (const std::exception& e) {
                ran = false;
                bwhy = std::string("threw: ") + e.what();
            }
            if (!ran) {
                std::printf("%-8s %-58s FAIL: %s\n", b.name.c_str(), c.name.c_str(), bwhy.c_str());
                ++failures;
                continue;
            }
            for (const Array& r : ref) {
                const Array* g = nullptr;
                for (const Array& x : got)
                    if (x.name == r.name) g = &x;
                ++checks;
                if (!g) {
                    std::printf("%-8s %-58s %-8s FAIL: no such output\n", b.name.c_str(), c.name.c_str(),
                                r.name.c_str());
                    ++failures;
                    continue;
                }
                const double e = nmse(*g, r);
                const double bound = g->prec == Prec::EXACT ? 0.0
                                     : g->prec == Prec::F32 ? bound_f32 * bound_f32
                                                            : bound_bf16 * bound_bf16;
                const bool ok = e <= bound;
                failures += !ok;
                std::printf("%-8s %-58s %-8s %-5s %10.3e %10.3e  %s\n", b.name.c_str(), c.name.c_str(), r.name.c_str(),
                            prec_name(g->prec), e, bound, ok ? "ok" : "FAIL");
            }
        }
    }
    std::printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
