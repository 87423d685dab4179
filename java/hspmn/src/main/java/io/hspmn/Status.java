package io.hspmn;

/** Every {@code hspmn_status} value of hspmn.h (HSPMN_OK, then HSPMN_ERR_ + the name), in the header's order. */
public enum Status implements NativeEnum {
    OK,
    INVALID_ARGUMENT,
    SHAPE,
    DTYPE,
    MEMORY_KIND,
    OUT_OF_MEMORY,
    NOT_BUILT,
    NO_DEVICE,
    BACKEND,
    NOT_FOUND,
    STATE,
    NON_FINITE,
    BUSY,
    INTERNAL,
    DEVICE_LOST,
    COMM;

    /** The status for a native code; an unknown code (newer library) maps to INTERNAL rather than failing. */
    public static Status of(int code) {
        Status[] all = values();
        return code >= 0 && code < all.length ? all[code] : INTERNAL;
    }
}
