package io.hspmn.train;

import io.hspmn.Backend;
import io.hspmn.metrics.MetricsWriter;
import io.hspmn.metrics.StepMetrics;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * CI-sized runs on data/corpus.txt (CPU, two threads) with the default router settings learn:
 * validation bits per byte end well below the validation split's unigram entropy (the best any model
 * that ignores context can do), and, for two seeds, every layer routes in evaluation mode (no noise, as
 * inference does) a fraction of tokens within 0.03 of the target rho (router bias control,
 * native/README.md "Router bias control").
 */
class TrainingTest {
    /** Margin under the unigram entropy, bits per byte: a model using context at all clears it easily. */
    static final double MARGIN_BITS = 1.0;
    /** The goal for the evaluation-mode routed fraction with default settings. */
    static final double ROUTED_TOLERANCE = 0.03;

    @TempDir
    Path dir;

    static TrainOptions ciRun(Path out) {
        return ciRun(out, 1);
    }

    /**
     * A 2-layer, width-64 model, 400 steps; everything about routing (rho 0.2, the aux coefficients, the
     * aux warm-up, --router-bias-rate) at its default. Validation reads 24 batches (24 k bytes) so that the
     * measured fraction is the model's, not one passage's.
     */
    static TrainOptions ciRun(Path out, long seed) {
        return TrainOptions.builder().data(TrainingFixtures.CORPUS).out(out).dim(64).layers(2).heads(2).kvHeads(1)
                .seqLen(128).batch(8).steps(400).evalEvery(100).evalBatches(24).seed(seed).backend(Backend.CPU)
                .threads(2).build();
    }

    @ParameterizedTest(name = "seed {0}")
    @ValueSource(longs = {1, 2})
    void aSmallModelLearnsAndRoutesAtTheTargetWithTheDefaults(long seed) throws Exception {
        TrainOptions opts = ciRun(dir.resolve("run"), seed);
        assertEquals(TrainOptions.builder().build().routerBiasRate(), opts.routerBiasRate());
        assertEquals(TrainOptions.builder().build().routerSparsityCoef(), opts.routerSparsityCoef());
        assertEquals(TrainOptions.builder().build().routerEntropyCoef(), opts.routerEntropyCoef());
        long t0 = System.nanoTime();
        Trainer.Result r;
        try (Trainer t = Trainer.open(opts, null)) {
            r = t.run();
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        Trainer.EvalResult e = r.lastEval();
        assertNotNull(e);
        List<StepMetrics> log = MetricsWriter.read(opts.out().resolve(Trainer.METRICS));
        System.out.printf("training test (seed %d): %d steps in %.1f s, validation %.4f bits/byte vs unigram entropy "
                        + "%.4f, routed fraction (no noise) %s, training routed fraction %s, skipped %d%n", seed, r.step(),
                seconds, e.bitsPerByte(), r.validationEntropy(), Arrays.toString(e.routedFraction()),
                Arrays.toString(log.getLast().routedFraction()), r.skippedSteps());
        assertEquals(opts.steps(), r.step());
        assertEquals(0, r.skippedSteps());
        assertTrue(e.bitsPerByte() < r.validationEntropy() - MARGIN_BITS, "validation " + e.bitsPerByte()
                + " bits/byte, unigram entropy " + r.validationEntropy());
        double[] routed = e.routedFraction();
        assertEquals(2, routed.length);
        for (int i = 0; i < routed.length; i++) {
            assertEquals(opts.rho(), routed[i], ROUTED_TOLERANCE, "layer " + i + " routes " + routed[i]
                    + " of the tokens without noise; the target is " + opts.rho());
        }
        // the metrics carry the same final validation
        assertEquals(e.bitsPerByte(), log.getLast().valBpb(), 0);
    }

    @Test
    void withoutBiasControlTheDefaultsRouteFarFromTheTarget() throws Exception {
        // The test's power: the same run with --router-bias-rate 0 misses the target in some layer.
        TrainOptions opts = ciRun(dir.resolve("off"), 1).toBuilder().routerBiasRate(0f).build();
        Trainer.Result r;
        try (Trainer t = Trainer.open(opts, null)) {
            r = t.run();
        }
        double[] routed = r.lastEval().routedFraction();
        System.out.printf("training test without bias control: routed fraction (no noise) %s%n", Arrays.toString(routed));
        double worst = 0;
        for (double f : routed) {
            worst = Math.max(worst, Math.abs(f - opts.rho()));
        }
        assertTrue(worst > ROUTED_TOLERANCE, "without bias control every layer already routes within "
                + ROUTED_TOLERANCE + " of rho: " + Arrays.toString(routed));
    }
}
