package io.hspmn;

/** {@code hspmn_dtype}, with the element size in bytes. */
public enum DType {
    BF16(0, 2),
    F32(1, 4),
    I32(2, 4);

    private final int code;
    private final int byteSize;

    DType(int code, int byteSize) {
        this.code = code;
        this.byteSize = byteSize;
    }

    public int code() {
        return code;
    }

    public int byteSize() {
        return byteSize;
    }

    public static DType of(int code) {
        for (DType d : values()) {
            if (d.code == code) {
                return d;
            }
        }
        throw new IllegalArgumentException("unknown hspmn_dtype " + code);
    }
}
