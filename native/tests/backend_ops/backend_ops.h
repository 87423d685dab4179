// The per-op backend test suite (in the spirit of llama.cpp's tests/test-backend-ops.cpp): ONE registry
// of op cases (registry.cpp), run by every backend's adapter (cpu_ops.cpp, cuda_ops.cu). Every case of
// every backend is compared with the CPU backend's result by normalised MSE; the CPU results are
// compared with the PyTorch reference by native/reference/check_backend_ops.py, which reads the cases
// and CPU outputs that `test_backend_ops --dump DIR` writes. Bounds: native/reference/tolerances.json.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace hspmn::backend_ops {

// How a result may differ from the oracle's: EXACT (integers, bit-defined values), F32 (float32
// arithmetic on the same inputs), BF16 (stored in bf16, or computed through bf16 intermediates).
enum class Prec { EXACT, F32, BF16 };
const char* prec_name(Prec p);

struct Array {
    Array() = default;
    Array(std::string n, std::vector<int64_t> s, bool integer = false)
        : name(std::move(n)), shape(std::move(s)), is_int(integer) {}
    std::string name;
    std::vector<int64_t> shape;
    bool is_int = false;
    std::vector<float> f;    // values when !is_int
    std::vector<int32_t> i;  // values when is_int
    Prec prec = Prec::F32;   // outputs only: the backend's precision of this result
    int64_t numel() const;
};

// One case of one op: scalar parameters by name and the inputs (float inputs are bf16-exact, so a
// bf16 backend and a float32 backend read the same values).
struct Case {
    std::string op;
    std::string name;  // unique across the registry, e.g. "sqdk_attention_backward/Dh128_ragged"
    std::map<std::string, double> p;
    std::vector<Array> in;
    int64_t i(const char* key) const;
    double d(const char* key) const;
    const Array& input(const char* name) const;
};

// The registry: every op of the seam with its cases.
std::vector<Case> registry();

// A backend's ops: run(case) fills the outputs or returns false with why (an op the backend lacks, a
// head dim it was not built for); a false from a backend that should have the op is a failure.
struct OpBackend {
    std::string name;
    std::function<bool(const Case&, std::vector<Array>& out, std::string& why)> run;
};
OpBackend cpu_backend();
// Null run when the CUDA backend is not built or no device is present (why says which).
OpBackend cuda_backend(std::string& why);

// sum (a - b)^2 / sum b^2 in float64 (0/0 = 0, x/0 = inf, NaN = inf).
double nmse(const Array& got, const Array& ref);

}  // namespace hspmn::backend_ops
