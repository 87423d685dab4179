// Internal failures travel as hspmn::Error exceptions up to the ABI layer, which turns them into a
// status plus the thread's last-error message; nothing is thrown across the C boundary.
#pragma once

#include <cstdarg>
#include <string>

#include "hspmn.h"

namespace hspmn {

struct Error {
    hspmn_status status;
    std::string message;
};

// printf-style; throws Error{status, message}.
[[noreturn]] void fail(hspmn_status status, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

void set_last_error(const std::string& message);
const char* last_error() noexcept;

}  // namespace hspmn
