package io.hspmn.generate;

import io.hspmn.Context;
import io.hspmn.ContextOptions;
import io.hspmn.DType;
import io.hspmn.LanguageModel;
import io.hspmn.LossResult;
import io.hspmn.MemoryKind;
import io.hspmn.ModelConfig;
import io.hspmn.ModelForwardOptions;
import io.hspmn.Routing;
import io.hspmn.Tensor;

import java.lang.foreign.MemorySegment;

/** Making language models for the engines, and choosing an engine for a model. */
public final class Models {
    private Models() {
    }

    /** How the next-token logits are computed. */
    public enum EngineKind {
        /** {@link CachedEngine} for threshold routing (the only routing that can decode), else recompute. */
        AUTO,
        CACHED,
        RECOMPUTE;

        public static EngineKind parse(String s) {
            try {
                return valueOf(s.trim().toUpperCase(java.util.Locale.ROOT));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("engine must be auto, cached or recompute, not '" + s + "'");
            }
        }
    }

    /** A model with seeded random weights in a context of its own ({@link #closeWithContext} frees both). */
    public static LanguageModel random(ModelConfig config, long seed, ContextOptions options) {
        Context ctx = Context.create(options);
        try {
            return LanguageModel.create(ctx, config.validate(), seed);
        } catch (RuntimeException e) {
            ctx.close();
            throw e;
        }
    }

    /** Closes the model and the context it was made in (which must be its own). */
    public static void closeWithContext(LanguageModel lm) {
        Context ctx = lm.context();
        try {
            lm.close();
        } finally {
            ctx.close();
        }
    }

    /**
     * The engine for a model.
     *
     * @param maxBatch  sequences decoded together (the Generator's batch)
     * @param maxLength longest sequence
     * @param ownsModel whether closing the engine closes the model and its context
     */
    public static DecodeEngine engine(LanguageModel lm, EngineKind kind, int maxBatch, int maxLength, boolean ownsModel) {
        boolean causal = lm.config().block().routing() == Routing.THRESHOLD;
        EngineKind k = kind == EngineKind.AUTO ? (causal ? EngineKind.CACHED : EngineKind.RECOMPUTE) : kind;
        return k == EngineKind.CACHED ? new CachedEngine(lm, maxBatch, maxLength, ownsModel)
                : new RecomputeEngine(lm, maxLength, ownsModel);
    }

    /** A name for an engine, for health reports. */
    public static String describe(DecodeEngine e) {
        return e instanceof CachedEngine ? "cached" : e instanceof RecomputeEngine ? "recompute" : e.getClass().getSimpleName();
    }

    /** A PINNED tensor (page-locked on CUDA, plain host memory on the CPU backend): the engines' I/O. */
    static Tensor pinned(Context ctx, DType dtype, long... shape) {
        return Tensor.create(ctx, dtype, MemoryKind.PINNED, shape);
    }

    /**
     * What a full inference forward reports over {@code ids[0..count)}: the mean cross-entropy of
     * predicting ids[1..count) (one forward over the first count - 1 tokens) and each layer's aux loss
     * and routed fraction over all count tokens (a second forward; its targets are only there because
     * hspmn_model_forward wants some).
     */
    static ForwardReport fullForward(LanguageModel lm, MemorySegment ids, int count, int[][] selected) {
        Context ctx = lm.context();
        double ce = Double.NaN;
        if (count >= 2) {
            try (Tensor in = pinned(ctx, DType.I32, 1, count - 1); Tensor tgt = pinned(ctx, DType.I32, 1, count - 1)) {
                MemorySegment.copy(ids, 0, in.segment(), 0, 4L * (count - 1));
                MemorySegment.copy(ids, 4, tgt.segment(), 0, 4L * (count - 1));
                ce = lm.forward(in, tgt, ModelForwardOptions.evaluation()).crossEntropy();
            }
        }
        LossResult all;
        try (Tensor in = pinned(ctx, DType.I32, 1, count); Tensor tgt = pinned(ctx, DType.I32, 1, count)) {
            MemorySegment.copy(ids, 0, in.segment(), 0, 4L * count);
            MemorySegment.copy(ids, 0, tgt.segment(), 0, 4L * count);
            all = lm.forward(in, tgt, ModelForwardOptions.evaluation());
        }
        return new ForwardReport(ce, all.aux(), all.routedFraction(), selected);
    }
}
