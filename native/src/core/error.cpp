#include "error.h"

#include <cstdio>

namespace hspmn {
namespace {

thread_local std::string t_last_error;

std::string vformat(const char* fmt, va_list ap) {
    va_list copy;
    va_copy(copy, ap);
    int n = std::vsnprintf(nullptr, 0, fmt, copy);
    va_end(copy);
    if (n <= 0) return std::string();
    std::string s(static_cast<std::size_t>(n) + 1, '\0');
    std::vsnprintf(&s[0], s.size(), fmt, ap);
    s.resize(static_cast<std::size_t>(n));
    return s;
}

}  // namespace

void fail(hspmn_status status, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string msg = vformat(fmt, ap);
    va_end(ap);
    throw Error{status, std::move(msg)};
}

std::string format(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string msg = vformat(fmt, ap);
    va_end(ap);
    return msg;
}

void set_last_error(const std::string& message) {
    try {
        t_last_error = message;
    } catch (...) {
        // Out of memory while reporting: keep the previous text rather than throw across the ABI.
    }
}

const char* last_error() noexcept { return t_last_error.c_str(); }

}  // namespace hspmn
