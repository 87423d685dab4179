// What every native test program shares: checks that count and report without stopping, and the
// tally that is the program's exit status. abi_check.h adds the public-ABI helpers, cuda_check.h the
// device ones.
#pragma once

#include <cstdarg>
#include <cstdio>

inline int g_failures = 0, g_checks = 0;

// fmt: " " then the caller's printf-style details, or " " alone when there are none.
__attribute__((format(printf, 4, 5))) inline void check_failed(const char* file, int line, const char* cond,
                                                                const char* fmt, ...) {
    ++g_failures;
    std::printf("FAIL %s:%d: %s", file, line, cond);
    if (fmt[1] != '\0') {
        std::printf(":");
        va_list args;
        va_start(args, fmt);
        std::vprintf(fmt, args);
        va_end(args);
    }
    std::printf("\n");
}

// EXPECT(cond) or EXPECT(cond, "printf format", args...): counts, and on failure prints the condition
// and the details, then carries on.
#define EXPECT(cond, ...)                                                        \
    do {                                                                         \
        ++g_checks;                                                              \
        if (!(cond)) check_failed(__FILE__, __LINE__, #cond, " " __VA_ARGS__);   \
    } while (0)

// Prints the tally; the program's exit status.
inline int report() {
    std::printf("%d checks, %d failures\n", g_checks, g_failures);
    return g_failures == 0 ? 0 : 1;
}
