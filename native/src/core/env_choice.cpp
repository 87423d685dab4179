#include "env_choice.h"

#include <cstdlib>
#include <cstring>

#include "error.h"

namespace hspmn {

int env_choice(const char* name, std::initializer_list<const char*> allowed, int fallback, const char* meaning) {
    const char* e = std::getenv(name);
    if (!e || !*e) return fallback;
    int i = 0;
    for (const char* a : allowed) {
        if (std::strcmp(e, a) == 0) return i;
        ++i;
    }
    fail(HSPMN_ERR_INVALID_ARGUMENT, "%s=%s: expected %s", name, e, meaning);
}

}  // namespace hspmn
