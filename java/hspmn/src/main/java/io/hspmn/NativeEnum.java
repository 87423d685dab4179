package io.hspmn;

/**
 * A Java mirror of a C enum of hspmn.h whose values run 0, 1, 2... in declaration order: the constant's
 * ordinal is its native code, so the mirror declares its constants in the header's order and nothing else
 * (NativeEnumTest checks every constant against the header's value).
 */
public interface NativeEnum {
    int ordinal();

    /** The value hspmn.h gives this constant. */
    default int code() {
        return ordinal();
    }

    /** The constant of {@code type} whose native code is {@code code}; {@code cName} names the C enum in the error. */
    static <E extends Enum<E> & NativeEnum> E of(Class<E> type, int code, String cName) {
        E[] all = type.getEnumConstants();
        if (code < 0 || code >= all.length) {
            throw new IllegalArgumentException("unknown " + cName + " " + code);
        }
        return all[code];
    }
}
