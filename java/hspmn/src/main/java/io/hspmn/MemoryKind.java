package io.hspmn;

/** {@code hspmn_memory}. Only HOST and PINNED tensors have a {@link Tensor#segment()} view. */
public enum MemoryKind {
    HOST(0),
    DEVICE(1),
    PINNED(2);

    private final int code;

    MemoryKind(int code) {
        this.code = code;
    }

    public int code() {
        return code;
    }

    public static MemoryKind of(int code) {
        for (MemoryKind m : values()) {
            if (m.code == code) {
                return m;
            }
        }
        throw new IllegalArgumentException("unknown hspmn_memory " + code);
    }
}
