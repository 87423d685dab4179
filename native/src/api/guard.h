// Every entry point runs its body through guarded(): the only place exceptions become statuses.
#pragma once

#include <atomic>
#include <exception>
#include <new>
#include <string>

#include "../core/error.h"
#include "hspmn.h"

namespace hspmn {

template <class Body>
hspmn_status guarded(const char* fn, Body&& body) noexcept {
    try {
        body();
        return HSPMN_OK;
    } catch (const Error& e) {
        set_last_error(std::string(fn) + ": " + e.message);
        return e.status;
    } catch (const std::bad_alloc&) {
        set_last_error(std::string(fn) + ": out of memory");
        return HSPMN_ERR_OUT_OF_MEMORY;
    } catch (const std::exception& e) {
        set_last_error(std::string(fn) + ": internal error: " + e.what());
        return HSPMN_ERR_INTERNAL;
    } catch (...) {
        set_last_error(std::string(fn) + ": internal error (unknown exception)");
        return HSPMN_ERR_INTERNAL;
    }
}

// Holds an object's busy flag for one call; a second thread gets HSPMN_ERR_BUSY, never a race.
class BusyGuard {
public:
    BusyGuard(std::atomic<int>& flag, const char* what) : flag_(flag) {
        int expected = 0;
        if (!flag_.compare_exchange_strong(expected, 1, std::memory_order_acquire))
            fail(HSPMN_ERR_BUSY, "%s is in use by another thread", what);
    }
    ~BusyGuard() { flag_.store(0, std::memory_order_release); }
    BusyGuard(const BusyGuard&) = delete;
    BusyGuard& operator=(const BusyGuard&) = delete;

private:
    std::atomic<int>& flag_;
};

// An object's busy flag (block, model), then its context's: what a call that works on the object holds.
class BusyPair {
public:
    BusyPair(std::atomic<int>& object, const char* what, std::atomic<int>& context)
        : object_(object, what), context_(context, "context") {}

private:
    BusyGuard object_, context_;
};

}  // namespace hspmn
