package io.hspmn.generate;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Steps whose next token the engine samples (only ids come back): the same tokens as sampling the logits in
 * Java, with every sequence's random stream continued across both ways (the first token of a sequence is
 * drawn in Java from its prefill's logits, the rest by the engine, and sequences that need logits fall back
 * to Java in the same step).
 */
@Timeout(120)
class SampledStepTest {
    static SamplingParams params(String kind, long seed) {
        return switch (kind) {
            case "greedy" -> SamplingParams.greedy();
            case "temp" -> SamplingParams.temperature(0.9f, seed);
            case "topk" -> new SamplingParams(0.9f, 7, 1f, seed);
            case "topp" -> new SamplingParams(0.9f, 0, 0.8f, seed);
            case "both" -> new SamplingParams(1.2f, 20, 0.9f, seed);
            default -> throw new IllegalArgumentException(kind);
        };
    }

    static final String[] KINDS = {"greedy", "temp", "topk", "topp", "both"};

    /** Requests of every sampler, one of them with logprobs (it needs logits), plus one scoring pass. */
    static List<GenerationRequest> requests() {
        List<GenerationRequest> r = new ArrayList<>();
        for (int i = 0; i < KINDS.length; i++) {
            r.add(GenerationRequest.of(TinyModels.ids("prompt " + i), params(KINDS[i], 40 + i), 20 + i).withLogprobs(i == 2));
        }
        return r;
    }

    record Run(List<GenerationResult> results, double[] score) {
    }

    static Run run(DecodeEngine engine) throws Exception {
        try (Generator g = new Generator(engine, 8, 4)) {
            List<GenerationSession> s = new ArrayList<>();
            for (GenerationRequest r : requests()) {
                GenerationSession x = new GenerationSession(r, null);
                g.enqueue(x.slot);
                s.add(x);
            }
            CompletableFuture<ScoreResult> score = g.score(TinyModels.ids("scored text"));
            g.runUntilIdle();
            List<GenerationResult> out = new ArrayList<>();
            for (GenerationSession x : s) {
                out.add(x.await());
            }
            float[] lp = score.get().logprobs();
            double[] d = new double[lp.length];
            for (int i = 0; i < lp.length; i++) {
                d[i] = lp[i];
            }
            return new Run(out, d);
        }
    }

    static void assertSame(Run want, Run got) {
        for (int i = 0; i < want.results().size(); i++) {
            GenerationResult w = want.results().get(i);
            GenerationResult g = got.results().get(i);
            assertEquals(FinishReason.LENGTH, g.finishReason(), "request " + i + ": " + g.error());
            assertArrayEquals(w.tokens(), g.tokens(), "request " + i + " (" + KINDS[i] + ")");
            assertArrayEquals(w.logprobs(), g.logprobs(), "request " + i);
        }
        assertArrayEquals(want.score(), got.score(), "the scoring pass");
    }

    @Test
    void engineSamplingEqualsJavaSamplingOnTheFakeEngine() throws Exception {
        FakeEngine java = new FakeEngine(256, 200, 8);
        FakeEngine sampling = new FakeEngine(256, 200, 8);
        sampling.samples = true;
        Run want = run(java);
        Run got = run(sampling);
        assertTrue(sampling.sampledSteps > 20, "the engine sampled in " + sampling.sampledSteps + " steps");
        assertSame(want, got);
    }

    /** The CPU backend's native step (hspmn_decoder_step) against the Java Sampler over the logits. */
    @Test
    void theCachedEnginesNativeSamplingEqualsJavaSampling() throws Exception {
        try (CachedEngine a = TinyModels.cached(81, 8, 256); CachedEngine b = TinyModels.cached(81, 8, 256)) {
            assertTrue(a.samplesTokens());
            assertEquals(0, a.capturedBatchSizes().length, "no graphs on the CPU");
            Run want = run(new RecordingEngine(b).javaSampling());
            Run got = run(a);
            assertSame(want, got);
        }
    }

    @Test
    void aSequenceWithNonFiniteLogitsFailsAlone() throws Exception {
        FakeEngine f = new FakeEngine(64, 200, 4);
        f.samples = true;
        f.nanAtLength = 6; // "abc" + 3 generated
        try (Generator g = new Generator(f, 4)) {
            GenerationSession bad = g.start(GenerationRequest.of(new int[] {1, 2, 3}, SamplingParams.temperature(1f, 3), 10), null);
            GenerationSession good = g.start(GenerationRequest.of(new int[] {4, 5, 6, 7, 8, 9, 10}, SamplingParams.greedy(), 10), null);
            g.runUntilIdle();
            GenerationResult r = bad.await();
            assertEquals(FinishReason.ERROR, r.finishReason());
            assertTrue(r.error().getMessage().contains("NaN"), r.error().getMessage());
            assertEquals(3, r.generatedTokens());
            assertEquals(FinishReason.LENGTH, good.await().finishReason());
            assertEquals(10, good.await().generatedTokens());
            assertEquals(0, f.live);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"greedy", "topp"})
    void noLogitsCrossWhenNoSequenceNeedsThem(String kind) throws Exception {
        List<Boolean> wanted = new ArrayList<>();
        FakeEngine f = new FakeEngine(64, 200, 4);
        f.samples = true;
        DecodeEngine spy = new RecordingEngine(f) {
            @Override
            public MemorySegment stepSampled(Sequence[] sequences, int count, MemorySegment nextIds, MemorySegment params,
                                             MemorySegment sampled, boolean wantLogits) {
                wanted.add(wantLogits);
                MemorySegment l = super.stepSampled(sequences, count, nextIds, params, sampled, wantLogits);
                if (!wantLogits) {
                    assertNull(l);
                }
                return l;
            }
        };
        try (Generator g = new Generator(spy, 4)) {
            g.start(GenerationRequest.of(new int[] {1, 2}, params(kind, 5), 8), null);
            g.start(GenerationRequest.of(new int[] {3}, params(kind, 6), 8), null);
            g.runUntilIdle();
        }
        assertEquals(7, wanted.size());
        assertFalse(wanted.contains(true), "logits were asked for: " + wanted);
    }
}
