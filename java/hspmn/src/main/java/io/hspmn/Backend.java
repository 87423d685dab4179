package io.hspmn;

/** {@code hspmn_backend}. AUTO resolves to CUDA when built and a device is present, else CPU. */
public enum Backend implements NativeEnum {
    CPU,
    CUDA,
    AUTO;

    public static Backend of(int code) {
        return NativeEnum.of(Backend.class, code, "hspmn_backend");
    }

    /** Parses "cpu", "cuda" or "auto" (any case), as the demo and benchmarks take it on the command line. */
    public static Backend parse(String name) {
        try {
            return valueOf(name.trim().toUpperCase(java.util.Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("backend must be cpu, cuda or auto, not '" + name + "'");
        }
    }
}
