package io.hspmn.train;

/**
 * The learning-rate and aux-target schedules of native/reference/hspmn_lm.py (lr_schedule,
 * aux_target_schedule), term for term in double precision so the float handed to the ABI is the
 * reference's. {@code step} is the 0-based optimizer step about to be taken.
 */
public final class Schedules {
    /** Where the aux loss's target starts: the paper anneals 0.8 -> sparsity_k. */
    public static final double AUX_TARGET_START = 0.8;

    private Schedules() {
    }

    /**
     * {@code peak * (step + 1) / warmup} while {@code step < warmup} (never 0: step 0 already moves), then
     * cosine from peak to {@code peak * minRatio} over {@code total - warmup} steps, and
     * {@code peak * minRatio} from {@code total} on.
     */
    public static double lr(long step, long warmup, long total, double peak, double minRatio) {
        if (step < warmup) {
            return peak * (step + 1) / warmup;
        }
        double q = Math.min(1.0, Math.max(0.0, (double) (step - warmup) / Math.max(1, total - warmup)));
        return peak * (minRatio + (1.0 - minRatio) * 0.5 * (1.0 + Math.cos(Math.PI * q)));
    }

    /**
     * rho_target of the aux loss: {@code 0.8 + (sparsityK - 0.8) * step / warmup} while {@code step < warmup},
     * then {@code sparsityK}; rounded to float32 as the ABI takes it.
     */
    public static float auxTarget(long step, long warmup, float sparsityK) {
        if (step < warmup) {
            return (float) (AUX_TARGET_START + ((double) sparsityK - AUX_TARGET_START) * step / warmup);
        }
        return sparsityK;
    }
}
