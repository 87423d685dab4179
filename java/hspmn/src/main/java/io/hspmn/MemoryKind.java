package io.hspmn;

/** {@code hspmn_memory}. Only HOST and PINNED tensors have a {@link Tensor#segment()} view. */
public enum MemoryKind implements NativeEnum {
    HOST,
    DEVICE,
    PINNED;

    public static MemoryKind of(int code) {
        return NativeEnum.of(MemoryKind.class, code, "hspmn_memory");
    }
}
