package io.hspmn;

import io.hspmn.ffi.hspmn_adamw_params;

import java.lang.foreign.MemorySegment;

/**
 * One AdamW update ({@code hspmn_adamw_params}): global L2 clipping, decoupled weight decay on 2-D
 * parameters, bias-corrected moments on the float32 master weights (hspmn_lm.adamw_update).
 *
 * @param step         1-based count of updates including this one (bias correction)
 * @param lr           learning rate of this update
 * @param weightDecay  decoupled decay, applied to 2-D parameters only
 * @param maxGradNorm  global L2 clipping bound; {@code <= 0}: none
 */
public record AdamwOptions(long step, float lr, float beta1, float beta2, float eps, float weightDecay,
                           float maxGradNorm) {
    public static final float BETA1 = 0.9f;
    public static final float BETA2 = 0.95f;
    public static final float EPS = 1e-8f;

    public AdamwOptions {
        if (step < 1) {
            throw new InvalidArgumentException(Status.INVALID_ARGUMENT, "AdamW step counts updates from 1, got " + step);
        }
    }

    /** Betas 0.9 / 0.95, eps 1e-8 (the reference's), no weight decay, no clipping. */
    public static AdamwOptions of(long step, float lr) {
        return new AdamwOptions(step, lr, BETA1, BETA2, EPS, 0f, 0f);
    }

    public AdamwOptions withWeightDecay(float weightDecay) {
        return new AdamwOptions(step, lr, beta1, beta2, eps, weightDecay, maxGradNorm);
    }

    public AdamwOptions withMaxGradNorm(float maxGradNorm) {
        return new AdamwOptions(step, lr, beta1, beta2, eps, weightDecay, maxGradNorm);
    }

    void writeTo(MemorySegment p) {
        hspmn_adamw_params.step(p, step);
        hspmn_adamw_params.lr(p, lr);
        hspmn_adamw_params.beta1(p, beta1);
        hspmn_adamw_params.beta2(p, beta2);
        hspmn_adamw_params.eps(p, eps);
        hspmn_adamw_params.weight_decay(p, weightDecay);
        hspmn_adamw_params.max_grad_norm(p, maxGradNorm);
    }
}
