package io.hspmn.generate;

import io.hspmn.Backend;
import io.hspmn.DType;
import io.hspmn.HspmnConfig;
import io.hspmn.Routing;

/** Tiny random byte-level models on the CPU backend, small enough that a decode step takes well under a ms. */
public final class TinyModels {
    private TinyModels() {
    }

    public static NativeLm.Spec spec(Routing routing) {
        return new NativeLm.Spec(256, 2, HspmnConfig.builder().dim(32).numHeads(2).numKvHeads(1).mlpRatio(2)
                .routing(routing).sparsityK(0.3f).build());
    }

    public static NativeLm create(long seed) {
        return create(seed, Routing.THRESHOLD);
    }

    /**
     * A fresh model's threshold router selects almost nothing (router.b = ln(rho / (1 - rho)) < 0 puts
     * sigmoid below 0.5), which would leave attention out of every test; router.b = 0 routes about half.
     */
    static NativeLm create(long seed, Routing routing) {
        NativeLm lm = NativeLm.create(spec(routing), seed, Backend.CPU, 1);
        try (NativeLm.HostTensor zero = lm.tensor(DType.F32, 1)) {
            for (int i = 0; i < lm.numLayers(); i++) {
                lm.setParam("blocks." + i + ".router.b", zero);
            }
        }
        return lm;
    }

    /** An engine that owns a fresh tiny model. */
    public static RecomputeEngine engine(long seed, int maxLength) {
        return new RecomputeEngine(create(seed), maxLength, true);
    }

    static int[] ids(String text) {
        return new ByteTokenizer(256).encode(text);
    }
}
