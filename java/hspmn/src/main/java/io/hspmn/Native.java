package io.hspmn;

import io.hspmn.ffi.hspmn_h;

import java.lang.foreign.MemorySegment;

/** Status checking shared by the API classes. */
final class Native {
    private Native() {
    }

    /** Throws the typed exception for a non-OK status; the message is read on this thread, right after the call. */
    static void check(int status, String function) {
        if (status != hspmn_h.HSPMN_OK()) {
            throw HspmnException.of(Status.of(status), function, lastError());
        }
    }

    static String lastError() {
        return string(hspmn_h.hspmn_last_error());
    }

    /** A C string returned by the library; C_POINTER's target layout already spans it. */
    static String string(MemorySegment cstr) {
        return cstr.equals(MemorySegment.NULL) ? "" : cstr.getString(0);
    }
}
