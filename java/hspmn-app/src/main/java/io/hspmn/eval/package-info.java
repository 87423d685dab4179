/**
 * Held-out evaluation of a byte-level language model: {@link io.hspmn.eval.HeldOutEval} scores every
 * byte of a validation stream once, in non-overlapping windows of the model's context, and reports bits
 * per byte, each layer's routed fraction without noise and tokens per second ({@code hspmn eval}).
 */
package io.hspmn.eval;
