// A setting chosen by an environment variable from a few spellings (HSPMN_STREAMS, HSPMN_SWIGLU_GEMM,
// HSPMN_SWIGLU_GEMM_CLUSTER): read at every call, so a test can compare the choices in one process.
#pragma once

#include <initializer_list>

namespace hspmn {

// The index of the value of variable `name` in `allowed`; unset or empty gives `fallback`. Anything
// else throws Error{INVALID_ARGUMENT} naming the variable, the value, and `meaning` (what each value
// does, for the message).
int env_choice(const char* name, std::initializer_list<const char*> allowed, int fallback, const char* meaning);

}  // namespace hspmn
