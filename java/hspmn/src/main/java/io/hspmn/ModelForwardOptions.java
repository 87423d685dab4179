package io.hspmn;

import io.hspmn.ffi.hspmn_model_forward_params;

import java.lang.foreign.MemorySegment;

/**
 * Options of a language-model forward ({@code hspmn_model_forward_params}).
 *
 * @param training  keep activations for {@link LanguageModel#backward}; with noise on, layer i routes on
 *                  Gumbel noise keyed by (seed, step, layer = i)
 * @param noise     training only: false routes without noise
 * @param seed      Gumbel noise key
 * @param step      the noise step: with gradient accumulation {@code step * accum + micro}, so every
 *                  micro-batch draws fresh noise and a resumed run the same noise
 * @param auxTarget every layer's rho_target of the aux loss; negative means the config's sparsity_k
 * @param dropout   residual dropout p in [0, 1), training only: layer i's masks are keyed by (seed, step,
 *                  layer = i) like its noise, so a resumed run drops the same elements; 0 drops nothing
 * @param rowOffset >= 0: the index of the tokens' first row in the batch the noise and dropout draws are
 *                  keyed by (row b draws as row rowOffset + b): a data-parallel rank passes its first row
 *                  of the global batch, so N ranks draw what one forward of the whole batch draws
 * @param recompute training only: keep each layer's input instead of its activations, and let
 *                  {@link LanguageModel#backward} re-run each layer's forward just before its backward: the
 *                  same gradients bit for bit for about one more forward of compute, in the memory of
 *                  one layer's activations instead of every layer's
 */
public record ModelForwardOptions(boolean training, boolean noise, long seed, long step, float auxTarget,
                                  float dropout, long rowOffset, boolean recompute) {

    public ModelForwardOptions {
        ForwardOptions.checkDropout(dropout);
        ForwardOptions.checkRowOffset(rowOffset);
        if (recompute && !training) {
            throw new IllegalArgumentException("recompute needs a training forward (an evaluation keeps nothing to recompute)");
        }
    }

    /** Without recomputation. */
    public ModelForwardOptions(boolean training, boolean noise, long seed, long step, float auxTarget, float dropout,
                               long rowOffset) {
        this(training, noise, seed, step, auxTarget, dropout, rowOffset, false);
    }

    /** Keyed from row 0. */
    public ModelForwardOptions(boolean training, boolean noise, long seed, long step, float auxTarget, float dropout) {
        this(training, noise, seed, step, auxTarget, dropout, 0L);
    }

    /** Without dropout. */
    public ModelForwardOptions(boolean training, boolean noise, long seed, long step, float auxTarget) {
        this(training, noise, seed, step, auxTarget, 0f);
    }

    /** A training forward with noise. */
    public static ModelForwardOptions training(long seed, long step, float auxTarget) {
        return new ModelForwardOptions(true, true, seed, step, auxTarget);
    }

    /** A training forward with noise and residual dropout {@code dropout}. */
    public static ModelForwardOptions training(long seed, long step, float auxTarget, float dropout) {
        return new ModelForwardOptions(true, true, seed, step, auxTarget, dropout);
    }

    /** Evaluation: no noise, no dropout, nothing kept for backward, aux against the config's sparsity_k. */
    public static ModelForwardOptions evaluation() {
        return new ModelForwardOptions(false, false, 0, 0, -1f);
    }

    public ModelForwardOptions withNoise(boolean noise) {
        return new ModelForwardOptions(training, noise, seed, step, auxTarget, dropout, rowOffset, recompute);
    }

    public ModelForwardOptions withDropout(float dropout) {
        return new ModelForwardOptions(training, noise, seed, step, auxTarget, dropout, rowOffset, recompute);
    }

    public ModelForwardOptions withRowOffset(long rowOffset) {
        return new ModelForwardOptions(training, noise, seed, step, auxTarget, dropout, rowOffset, recompute);
    }

    public ModelForwardOptions withRecompute(boolean recompute) {
        return new ModelForwardOptions(training, noise, seed, step, auxTarget, dropout, rowOffset, recompute);
    }

    void writeTo(MemorySegment p) {
        hspmn_model_forward_params.training(p, training ? 1 : 0);
        hspmn_model_forward_params.noise(p, noise ? 1 : 0);
        hspmn_model_forward_params.seed(p, seed);
        hspmn_model_forward_params.step(p, step);
        hspmn_model_forward_params.aux_target(p, auxTarget);
        hspmn_model_forward_params.dropout(p, dropout);
        hspmn_model_forward_params.row_offset(p, rowOffset);
        hspmn_model_forward_params.recompute(p, recompute ? 1 : 0);
    }
}
