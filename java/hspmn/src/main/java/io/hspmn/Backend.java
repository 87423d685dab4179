package io.hspmn;

/** {@code hspmn_backend}. AUTO resolves to CUDA when built and a device is present, else CPU. */
public enum Backend {
    CPU(0),
    CUDA(1),
    AUTO(2);

    private final int code;

    Backend(int code) {
        this.code = code;
    }

    public int code() {
        return code;
    }

    public static Backend of(int code) {
        for (Backend b : values()) {
            if (b.code == code) {
                return b;
            }
        }
        throw new IllegalArgumentException("unknown hspmn_backend " + code);
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
