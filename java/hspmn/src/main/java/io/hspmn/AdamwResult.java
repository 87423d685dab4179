package io.hspmn;

/**
 * What {@link LanguageModel#adamwStep} did.
 *
 * @param gradNorm global L2 norm of the gradients before clipping
 * @param applied  false when the norm was not finite: weights and moments were left unchanged (a
 *                 trainer counts the step as skipped)
 */
public record AdamwResult(float gradNorm, boolean applied) {
}
