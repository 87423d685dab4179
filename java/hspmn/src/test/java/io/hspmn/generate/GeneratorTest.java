package io.hspmn.generate;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.PrimitiveIterator;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class GeneratorTest {
    /** Collects what a listener hears. */
    static class Recorder implements GenerationListener {
        final List<Integer> tokens = new ArrayList<>();
        final List<Float> logprobs = new ArrayList<>();
        GenerationResult finished;
        int finishCalls;

        @Override
        public void onToken(int index, int token, float logprob) {
            assertEquals(tokens.size(), index);
            tokens.add(token);
            logprobs.add(logprob);
        }

        @Override
        public void onFinish(GenerationResult result) {
            finished = result;
            finishCalls++;
        }

        int[] array() {
            return tokens.stream().mapToInt(Integer::intValue).toArray();
        }
    }

    private static GenerationResult run(Generator g, GenerationRequest r, Recorder rec) throws InterruptedException {
        GenerationSession s = g.start(r, rec);
        g.runUntilIdle();
        assertTrue(s.isDone());
        return s.await();
    }

    @Test
    void greedyStreamsTheModelsTokensToListenerIteratorAndResult() throws Exception {
        int[] prompt = {5, 6, 7};
        try (FakeEngine e = new FakeEngine(64, 100, 4); Generator g = new Generator(e, 4)) {
            Recorder rec = new Recorder();
            GenerationSession s = g.start(GenerationRequest.of(prompt, SamplingParams.greedy(), 10).withLogprobs(true), rec);
            assertEquals(1, s.tokenCount()); // the prefill decides the first token at once
            g.runUntilIdle();
            GenerationResult r = s.await();
            int[] expect = FakeEngine.greedy(prompt, 10, 64);
            assertArrayEquals(expect, r.tokens());
            assertArrayEquals(expect, rec.array());
            List<Integer> it = new ArrayList<>();
            for (int t : s) {
                it.add(t);
            }
            assertEquals(rec.tokens, it);
            assertEquals(FinishReason.LENGTH, r.finishReason());
            assertEquals(3, r.promptTokens());
            assertEquals(1, rec.finishCalls);
            assertNotNull(r.logprobs());
            for (float lp : r.logprobs()) {
                assertTrue(lp < 0 && lp > -10, "logprob " + lp);
            }
            assertEquals(0, e.live);
            assertEquals(9, g.steps());
            assertEquals(1, g.prefills());
        }
    }

    @Test
    void oneTokenNeedsNoStep() throws Exception {
        try (FakeEngine e = new FakeEngine(64, 100, 4); Generator g = new Generator(e, 4)) {
            GenerationSession s = g.start(GenerationRequest.of(new int[] {1}, SamplingParams.greedy(), 1), null);
            assertTrue(s.isDone());
            assertEquals(0, g.active());
            assertArrayEquals(FakeEngine.greedy(new int[] {1}, 1, 64), s.await().tokens());
            assertNull(s.await().logprobs());
        }
    }

    @Test
    void stopSequenceEndsGenerationAndIsNeverEmitted() throws Exception {
        int[] prompt = {1, 2, 3};
        int[] full = FakeEngine.greedy(prompt, 20, 64);
        // stop on the tokens at 6..8: the output is what came before them
        int[] stop = Arrays.copyOfRange(full, 6, 9);
        int cut = firstIndexOf(full, stop);
        try (FakeEngine e = new FakeEngine(64, 100, 4); Generator g = new Generator(e, 4)) {
            Recorder rec = new Recorder();
            GenerationResult r = run(g, GenerationRequest.of(prompt, SamplingParams.greedy(), 20)
                    .withStops(List.of(new int[] {63, 63, 63, 63}, stop)), rec);
            assertEquals(FinishReason.STOP, r.finishReason());
            assertArrayEquals(Arrays.copyOf(full, cut), r.tokens());
            assertArrayEquals(r.tokens(), rec.array(), "the listener saw a token of the stop sequence");
        }
    }

    private static int firstIndexOf(int[] a, int[] s) {
        outer:
        for (int i = 0; i + s.length <= a.length; i++) {
            for (int j = 0; j < s.length; j++) {
                if (a[i + j] != s[j]) {
                    continue outer;
                }
            }
            return i;
        }
        return -1;
    }

    @Test
    void heldBackTokensAreReleasedWhenTheStopDoesNotComplete() throws Exception {
        int[] prompt = {4, 4};
        int[] full = FakeEngine.greedy(prompt, 8, 64);
        // a stop sequence that starts with the last token, so that token is held back until the end
        int[] stop = {full[7], 63, 63, 63};
        assertEquals(-1, firstIndexOf(full, stop));
        try (FakeEngine e = new FakeEngine(64, 100, 4); Generator g = new Generator(e, 4)) {
            Recorder rec = new Recorder();
            GenerationResult r = run(g, GenerationRequest.of(prompt, SamplingParams.greedy(), 8).withStops(List.of(stop)), rec);
            assertEquals(FinishReason.LENGTH, r.finishReason());
            assertArrayEquals(full, r.tokens());
            assertArrayEquals(full, rec.array());
        }
    }

    @Test
    void cancelStopsBetweenSteps() throws Exception {
        try (FakeEngine e = new FakeEngine(64, 100, 4); Generator g = new Generator(e, 4)) {
            GenerationSession[] self = new GenerationSession[1];
            Recorder rec = new Recorder() {
                @Override
                public void onToken(int index, int token, float logprob) {
                    super.onToken(index, token, logprob);
                    if (index == 2) {
                        self[0].cancel();
                    }
                }
            };
            GenerationSession other = g.start(GenerationRequest.of(new int[] {9}, SamplingParams.greedy(), 6), null);
            self[0] = g.start(GenerationRequest.of(new int[] {1, 2}, SamplingParams.greedy(), 50), rec);
            g.runUntilIdle();
            GenerationResult r = self[0].await();
            assertEquals(FinishReason.CANCELLED, r.finishReason());
            assertEquals(3, r.generatedTokens(), "the cancel took effect at the next step");
            assertArrayEquals(FakeEngine.greedy(new int[] {1, 2}, 3, 64), r.tokens());
            assertEquals(FinishReason.LENGTH, other.await().finishReason(), "the other sequence went on");
            assertEquals(6, other.await().generatedTokens());
            assertEquals(0, e.live);
        }
    }

    @Test
    void contextLimitEndsTheSequence() throws Exception {
        try (FakeEngine e = new FakeEngine(64, 7, 4); Generator g = new Generator(e, 4)) {
            GenerationResult r = run(g, GenerationRequest.of(new int[] {1, 2, 3}, SamplingParams.greedy(), 50), new Recorder());
            assertEquals(FinishReason.CONTEXT, r.finishReason());
            // 7 - 3 steps fill the context; the token sampled from the last logits still counts
            assertEquals(5, r.generatedTokens());
            assertThrows(IllegalArgumentException.class,
                    () -> g.start(GenerationRequest.of(new int[8], SamplingParams.greedy(), 1), null));
            assertThrows(IllegalArgumentException.class,
                    () -> g.start(GenerationRequest.of(new int[] {64}, SamplingParams.greedy(), 1), null));
        }
    }

    @Test
    void aFailingListenerEndsOnlyItsOwnSession() throws Exception {
        try (FakeEngine e = new FakeEngine(64, 100, 4); Generator g = new Generator(e, 4)) {
            GenerationSession good = g.start(GenerationRequest.of(new int[] {3}, SamplingParams.greedy(), 5), null);
            GenerationSession bad = g.start(GenerationRequest.of(new int[] {4}, SamplingParams.greedy(), 5), (i, t, lp) -> {
                if (i == 1) {
                    throw new IllegalStateException("listener broke");
                }
            });
            g.runUntilIdle();
            assertEquals(FinishReason.ERROR, bad.await().finishReason());
            assertEquals("listener broke", bad.await().error().getMessage());
            assertEquals(FinishReason.LENGTH, good.await().finishReason());
            assertEquals(0, e.live);
        }
    }

    @Test
    void aFailingStepFailsItsBatchAndTheLoopGoesOn() throws Exception {
        try (FakeEngine e = new FakeEngine(64, 100, 4); Generator g = new Generator(e, 4)) {
            e.failStepsAtLength = 4;
            GenerationSession a = g.start(GenerationRequest.of(new int[] {1, 2}, SamplingParams.greedy(), 5), null);
            g.runUntilIdle();
            GenerationResult r = a.await();
            assertEquals(FinishReason.ERROR, r.finishReason());
            assertEquals(2, r.generatedTokens());
            e.failStepsAtLength = -1;
            GenerationSession b = g.start(GenerationRequest.of(new int[] {1, 2}, SamplingParams.greedy(), 5), null);
            g.runUntilIdle();
            assertEquals(FinishReason.LENGTH, b.await().finishReason());
            assertEquals(0, e.live);
        }
    }

    @Test
    void theBatchHasALimit() {
        try (FakeEngine e = new FakeEngine(64, 100, 2); Generator g = new Generator(e, 2)) {
            g.start(GenerationRequest.of(new int[] {1}, SamplingParams.greedy(), 5), null);
            g.start(GenerationRequest.of(new int[] {2}, SamplingParams.greedy(), 5), null);
            assertTrue(g.isFull());
            assertThrows(IllegalStateException.class, () -> g.start(GenerationRequest.of(new int[] {3}, SamplingParams.greedy(), 5), null));
            g.close();
            assertEquals(0, e.live);
        }
    }

    @Test
    void iteratorEndsWithTheSession() throws Exception {
        try (FakeEngine e = new FakeEngine(64, 100, 2); Generator g = new Generator(e, 2)) {
            GenerationSession s = g.start(GenerationRequest.of(new int[] {1}, SamplingParams.greedy(), 3), null);
            g.runUntilIdle();
            PrimitiveIterator.OfInt it = s.iterator();
            int n = 0;
            while (it.hasNext()) {
                it.nextInt();
                n++;
            }
            assertEquals(3, n);
            assertFalse(it.hasNext());
            assertThrows(java.util.NoSuchElementException.class, it::nextInt);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"cached", "recompute"})
    void realModelSessionsMatchRunningAlone(String kind) throws Exception {
        // join and leave at different steps; each result must equal the same request run alone
        List<GenerationRequest> reqs = List.of(
                GenerationRequest.of(TinyModels.ids("Hello"), SamplingParams.greedy(), 12).withLogprobs(true),
                GenerationRequest.of(TinyModels.ids("The quick"), SamplingParams.temperature(0.9f, 7), 4).withLogprobs(true),
                GenerationRequest.of(TinyModels.ids("ab"), new SamplingParams(1.1f, 20, 0.9f, 8), 10).withLogprobs(true),
                GenerationRequest.of(TinyModels.ids("World"), new SamplingParams(0.8f, 5, 1f, 9), 7).withLogprobs(true));
        GenerationResult[] alone = new GenerationResult[reqs.size()];
        try (DecodeEngine e = TinyModels.engine(kind, 11, 4, 128); Generator g = new Generator(e, 4)) {
            for (int i = 0; i < reqs.size(); i++) {
                alone[i] = run(g, reqs.get(i), null);
            }
        }
        try (DecodeEngine e = TinyModels.engine(kind, 11, 4, 128); Generator g = new Generator(e, 4)) {
            GenerationSession[] s = new GenerationSession[reqs.size()];
            s[0] = g.start(reqs.get(0), null);
            g.step();
            g.step();
            s[1] = g.start(reqs.get(1), null);
            s[2] = g.start(reqs.get(2), null);
            g.step();
            g.step();
            g.step();
            s[3] = g.start(reqs.get(3), null);
            g.runUntilIdle();
            for (int i = 0; i < reqs.size(); i++) {
                GenerationResult r = s[i].await();
                assertArrayEquals(alone[i].tokens(), r.tokens(), "request " + i);
                assertArrayEquals(alone[i].logprobs(), r.logprobs(), "request " + i);
                assertEquals(alone[i].finishReason(), r.finishReason());
            }
            assertTrue(g.stepSequences() > g.steps(), "no step carried more than one sequence");
            assertEquals(0, e instanceof CachedEngine c ? c.liveSequences() : ((RecomputeEngine) e).liveSequences());
        }
    }

    private static GenerationResult run(Generator g, GenerationRequest r, GenerationListener l) throws InterruptedException {
        GenerationSession s = g.start(r, l);
        g.runUntilIdle();
        return s.await();
    }
}
