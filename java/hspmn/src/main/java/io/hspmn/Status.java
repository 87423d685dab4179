package io.hspmn;

/** Every {@code hspmn_status} value of hspmn.h, by its numeric code. */
public enum Status {
    OK(0),
    INVALID_ARGUMENT(1),
    SHAPE(2),
    DTYPE(3),
    MEMORY_KIND(4),
    OUT_OF_MEMORY(5),
    NOT_BUILT(6),
    NO_DEVICE(7),
    BACKEND(8),
    NOT_FOUND(9),
    STATE(10),
    NON_FINITE(11),
    BUSY(12),
    INTERNAL(13),
    DEVICE_LOST(14);

    private final int code;

    Status(int code) {
        this.code = code;
    }

    public int code() {
        return code;
    }

    /** The status for a native code; an unknown code (newer library) maps to INTERNAL rather than failing. */
    public static Status of(int code) {
        for (Status s : values()) {
            if (s.code == code) {
                return s;
            }
        }
        return INTERNAL;
    }
}
