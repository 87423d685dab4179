package io.hspmn;

/**
 * {@code hspmn_nan_policy}. REJECT scans x and d_out and fails with {@link NonFiniteInputException};
 * PROPAGATE skips the scan, so NaN/Inf inputs give NaN/Inf outputs (and unspecified routing).
 */
public enum NanPolicy implements NativeEnum {
    REJECT,
    PROPAGATE
}
