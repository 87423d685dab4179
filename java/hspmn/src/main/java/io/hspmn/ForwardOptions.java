package io.hspmn;

import io.hspmn.ffi.hspmn_forward_params;

import java.lang.foreign.MemorySegment;

/**
 * Options of a forward or route call ({@code hspmn_forward_params}).
 *
 * @param training  keep activations for backward; with noise on, route on (l + g) / t
 * @param noise     training only: draw Gumbel noise g keyed by (seed, step, layer, b, s); off means g = 0
 * @param auxTarget rho_target of the aux loss; negative means the config's sparsity_k
 * @param dropout   residual dropout p in [0, 1), training only: the reflexive and attention branches are
 *                  multiplied by keep / (1 - p), the masks keyed by (seed, step, layer, b, s, d) like the
 *                  noise (native/README.md "Residual dropout"); 0 drops nothing
 * @param rowOffset >= 0: x's row b draws its noise and masks as row rowOffset + b of the batch they are
 *                  keyed by (data parallelism: the rank's first row of the global batch)
 */
public record ForwardOptions(boolean training, boolean noise, long seed, long step, int layer, float auxTarget,
                             float dropout, long rowOffset) {

    public ForwardOptions {
        checkDropout(dropout);
        checkRowOffset(rowOffset);
    }

    /** Keyed from row 0. */
    public ForwardOptions(boolean training, boolean noise, long seed, long step, int layer, float auxTarget,
                          float dropout) {
        this(training, noise, seed, step, layer, auxTarget, dropout, 0L);
    }

    /** The row offset rule of a block and of a model forward: >= 0. */
    static void checkRowOffset(long rowOffset) {
        if (rowOffset < 0) {
            throw new IllegalArgumentException("rowOffset (" + rowOffset + ") must be >= 0");
        }
    }

    /** The residual dropout rule of a block and of a model forward: p in [0, 1). */
    static void checkDropout(float dropout) {
        if (!(dropout >= 0f && dropout < 1f)) {
            throw new IllegalArgumentException("dropout (" + dropout + ") must be in [0, 1)");
        }
    }

    /** Without dropout. */
    public ForwardOptions(boolean training, boolean noise, long seed, long step, int layer, float auxTarget) {
        this(training, noise, seed, step, layer, auxTarget, 0f);
    }

    public static ForwardOptions inference() {
        return new ForwardOptions(false, true, 0, 0, 0, -1f);
    }

    public static ForwardOptions training(long seed, long step, int layer) {
        return new ForwardOptions(true, true, seed, step, layer, -1f);
    }

    public ForwardOptions withNoise(boolean noise) {
        return new ForwardOptions(training, noise, seed, step, layer, auxTarget, dropout, rowOffset);
    }

    public ForwardOptions withAuxTarget(float auxTarget) {
        return new ForwardOptions(training, noise, seed, step, layer, auxTarget, dropout, rowOffset);
    }

    public ForwardOptions withTraining(boolean training) {
        return new ForwardOptions(training, noise, seed, step, layer, auxTarget, dropout, rowOffset);
    }

    public ForwardOptions withDropout(float dropout) {
        return new ForwardOptions(training, noise, seed, step, layer, auxTarget, dropout, rowOffset);
    }

    public ForwardOptions withRowOffset(long rowOffset) {
        return new ForwardOptions(training, noise, seed, step, layer, auxTarget, dropout, rowOffset);
    }

    void writeTo(MemorySegment p) {
        hspmn_forward_params.training(p, training ? 1 : 0);
        hspmn_forward_params.noise(p, noise ? 1 : 0);
        hspmn_forward_params.seed(p, seed);
        hspmn_forward_params.step(p, step);
        hspmn_forward_params.layer(p, layer);
        hspmn_forward_params.aux_target(p, auxTarget);
        hspmn_forward_params.dropout(p, dropout);
        hspmn_forward_params.reserved(p, 0);
        hspmn_forward_params.row_offset(p, rowOffset);
    }
}
