// Libraries opened at run time instead of linked (cuBLASLt, NCCL), so libhspmn loads where they are
// absent: the first of several candidate paths that dlopen accepts.
#pragma once

#include <dlfcn.h>

#include <string>
#include <vector>

namespace hspmn {

// The handle of the first candidate that opens (its name in *opened), or null with every failure's
// dlerror() text joined into *tried. Empty candidates are passed over.
inline void* dlopen_first(const std::vector<std::string>& candidates, std::string* tried, std::string* opened) {
    for (const std::string& name : candidates) {
        if (name.empty()) continue;
        if (void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL)) {
            if (opened) *opened = name;
            return h;
        }
        const char* err = dlerror();
        if (tried) *tried += std::string(tried->empty() ? "" : "; ") + (err ? err : name);
    }
    return nullptr;
}

}  // namespace hspmn
