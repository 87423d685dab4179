package io.hspmn;

/**
 * {@code hspmn_nan_policy}. REJECT scans x and d_out and fails with {@link NonFiniteInputException};
 * PROPAGATE skips the scan, so NaN/Inf inputs give NaN/Inf outputs (and unspecified routing).
 */
public enum NanPolicy {
    REJECT(0),
    PROPAGATE(1);

    private final int code;

    NanPolicy(int code) {
        this.code = code;
    }

    public int code() {
        return code;
    }
}
