package io.hspmn;

/** AdamW's moments of a parameter, by the {@code which} code of hspmn_model_get_moment (0 = m, 1 = v). */
public enum Moment implements NativeEnum {
    /** First moment (mean of gradients). */
    M,
    /** Second moment (mean of squared gradients). */
    V
}
