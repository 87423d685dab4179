package io.hspmn.generate;

import io.hspmn.Backend;
import io.hspmn.ContextOptions;
import io.hspmn.HspmnConfig;
import io.hspmn.LanguageModel;
import io.hspmn.ModelConfig;
import io.hspmn.Routing;

/** Tiny random byte-level models on the CPU backend, small enough that a decode step takes well under a ms. */
public final class TinyModels {
    private TinyModels() {
    }

    public static ModelConfig config(Routing routing) {
        return new ModelConfig(256, 2, HspmnConfig.builder().dim(32).numHeads(2).numKvHeads(1).mlpRatio(2)
                .routing(routing).sparsityK(0.3f).build());
    }

    public static LanguageModel create(long seed) {
        return create(seed, Routing.THRESHOLD);
    }

    /**
     * A fresh model's threshold router selects almost nothing (router.b = ln(rho / (1 - rho)) < 0 puts
     * sigmoid below 0.5), which would leave attention out of every test; router.b = 0 routes about half.
     */
    public static LanguageModel create(long seed, Routing routing) {
        LanguageModel lm = Models.random(config(routing), seed,
                ContextOptions.defaults().withBackend(Backend.CPU).withNumThreads(1));
        for (int i = 0; i < lm.config().numLayers(); i++) {
            lm.setParam("blocks." + i + ".router.b", new float[] {0f});
        }
        return lm;
    }

    /** A recompute engine that owns a fresh tiny model. */
    public static RecomputeEngine recompute(long seed, int maxLength) {
        return new RecomputeEngine(create(seed), maxLength, true);
    }

    /** A cached engine that owns a fresh tiny model. */
    public static CachedEngine cached(long seed, int maxSeqs, int maxLength) {
        return new CachedEngine(create(seed), maxSeqs, maxLength, true);
    }

    /** Either engine, by name. */
    public static DecodeEngine engine(String kind, long seed, int maxSeqs, int maxLength) {
        return switch (kind) {
            case "cached" -> cached(seed, maxSeqs, maxLength);
            case "recompute" -> recompute(seed, maxLength);
            default -> throw new IllegalArgumentException(kind);
        };
    }

    static int[] ids(String text) {
        return new ByteTokenizer(256).encode(text);
    }
}
