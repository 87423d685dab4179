package io.hspmn;

/** {@code hspmn_dtype}, with the element size in bytes. */
public enum DType implements NativeEnum {
    BF16(2),
    F32(4),
    I32(4);

    private final int byteSize;

    DType(int byteSize) {
        this.byteSize = byteSize;
    }

    public int byteSize() {
        return byteSize;
    }

    public static DType of(int code) {
        return NativeEnum.of(DType.class, code, "hspmn_dtype");
    }
}
