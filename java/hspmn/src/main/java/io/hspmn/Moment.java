package io.hspmn;

/** AdamW's moments of a parameter, by the {@code which} code of hspmn_model_get_moment. */
public enum Moment {
    /** First moment (mean of gradients). */
    M(0),
    /** Second moment (mean of squared gradients). */
    V(1);

    private final int code;

    Moment(int code) {
        this.code = code;
    }

    public int code() {
        return code;
    }
}
