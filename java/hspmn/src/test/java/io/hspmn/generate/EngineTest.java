package io.hspmn.generate;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

@Timeout(120)
class EngineTest {
    private static GenerationRequest req(String prompt, SamplingParams p, int n) {
        return GenerationRequest.of(TinyModels.ids(prompt), p, n).withLogprobs(true);
    }

    @ParameterizedTest
    @ValueSource(strings = {"cached", "recompute"})
    void concurrentSubmissionsAreBatchedAndEqualRunningAlone(String kind) throws Exception {
        List<GenerationRequest> reqs = new ArrayList<>();
        String[] prompts = {"a", "Hello", "The engine", "zz", "0123456789", "Hello", "x y", "batch"};
        for (int i = 0; i < prompts.length; i++) {
            SamplingParams p = i % 3 == 0 ? SamplingParams.greedy()
                    : i % 3 == 1 ? SamplingParams.temperature(1f, 100 + i) : new SamplingParams(0.8f, 10, 0.9f, 100 + i);
            reqs.add(req(prompts[i], p, 6 + 3 * i));
        }
        GenerationResult[] alone = new GenerationResult[reqs.size()];
        try (DecodeEngine e = TinyModels.engine(kind, 21, 1, 128); Generator g = new Generator(e, 1)) {
            for (int i = 0; i < reqs.size(); i++) {
                GenerationSession s = g.start(reqs.get(i), null);
                g.runUntilIdle();
                alone[i] = s.await();
            }
        }
        try (Engine engine = Engine.start(() -> TinyModels.engine(kind, 21, 8, 128), new Engine.Options(8, 8))) {
            ExecutorService pool = Executors.newFixedThreadPool(reqs.size());
            CountDownLatch go = new CountDownLatch(1);
            List<Future<GenerationResult>> fs = new ArrayList<>();
            for (GenerationRequest r : reqs) {
                fs.add(pool.submit(() -> {
                    go.await();
                    try (GenerationSession s = engine.submit(r)) {
                        List<Integer> streamed = new ArrayList<>();
                        for (int t : s) {
                            streamed.add(t);
                        }
                        GenerationResult res = s.await();
                        assertEquals(streamed, java.util.Arrays.stream(res.tokens()).boxed().toList());
                        return res;
                    }
                }));
            }
            go.countDown();
            for (int i = 0; i < reqs.size(); i++) {
                GenerationResult r = fs.get(i).get(60, TimeUnit.SECONDS);
                assertEquals(FinishReason.LENGTH, r.finishReason(), "request " + i);
                assertArrayEquals(alone[i].tokens(), r.tokens(), "request " + i);
                assertArrayEquals(alone[i].logprobs(), r.logprobs(), "request " + i);
            }
            pool.shutdown();
            Engine.Stats st = engine.stats();
            assertTrue(st.meanBatch() > 1.5, "mean batch " + st.meanBatch() + ": the requests were not decoded together");
            assertEquals(reqs.size(), st.prefills());
            assertEquals(0, st.active());
            assertEquals(0, st.queued());
        }
    }

    @Test
    void theWorkerThreadAloneTouchesTheEngine() throws Exception {
        AtomicReference<FakeEngine> made = new AtomicReference<>();
        AtomicReference<Thread> maker = new AtomicReference<>();
        try (Engine engine = Engine.start(() -> {
            maker.set(Thread.currentThread());
            FakeEngine f = new FakeEngine(64, 100, 4);
            made.set(f);
            return f;
        }, new Engine.Options(4, 4))) {
            assertNotSame(Thread.currentThread(), maker.get());
            engine.submit(greedy(5, 1)).await();
            assertSame(maker.get(), made.get().lastCaller);
        }
        assertTrue(made.get().closed, "closing the Engine closes its decode engine");
        assertEquals(0, made.get().live);
    }

    /** A greedy request for maxNew tokens after the prompt. */
    private static GenerationRequest greedy(int maxNew, int... prompt) {
        return GenerationRequest.of(prompt, SamplingParams.greedy(), maxNew);
    }

    /**
     * An Engine over a FakeEngine whose every prefill and step waits for a permit of {@link #gate}. Closing
     * opens the gate for good before it closes the engine, so a failed assertion cannot leave the worker
     * waiting and the test hanging in close.
     */
    private static final class Gated implements AutoCloseable {
        final Semaphore gate = new Semaphore(0);
        final Engine engine;
        volatile FakeEngine fake;

        Gated(int maxBatch, int maxQueued) {
            engine = Engine.start(() -> {
                FakeEngine f = new FakeEngine(64, 1000, maxBatch);
                f.gate = gate;
                fake = f;
                return f;
            }, new Engine.Options(maxBatch, maxQueued));
        }

        /** Lets every prefill and step from now on through. */
        void open() {
            gate.release(1_000_000);
        }

        @Override
        public void close() {
            open();
            engine.close();
        }
    }

    @Test
    void admissionIsBoundedAndRejectsAtOnce() throws Exception {
        try (Gated g = new Gated(1, 1)) {
            Engine engine = g.engine;
            GenerationSession a = engine.submit(greedy(3, 1));
            GenerationSession b = engine.submit(greedy(3, 2));
            assertThrows(RejectedExecutionException.class, () -> engine.submit(greedy(3, 3)));
            assertThrows(RejectedExecutionException.class, () -> engine.score(new int[] {1, 2}));
            g.open();
            assertEquals(FinishReason.LENGTH, a.await().finishReason());
            assertEquals(FinishReason.LENGTH, b.await().finishReason());
            // room again
            assertEquals(3, engine.submit(greedy(3, 3)).await().generatedTokens());
        }
    }

    @Test
    void invalidRequestsFailAtSubmission() throws Exception {
        try (Engine engine = Engine.start(() -> new FakeEngine(64, 10, 2), new Engine.Options(2, 2))) {
            assertThrows(IllegalArgumentException.class, () -> engine.submit(greedy(1, 64)));
            assertThrows(IllegalArgumentException.class, () -> engine.submit(greedy(1, new int[11])));
            assertThrows(IllegalArgumentException.class, () -> engine.score(new int[0]));
            assertEquals(1, engine.submit(greedy(1, 1)).await().generatedTokens());
        }
    }

    @Test
    void cancelEndsARunningSessionAndAWaitingOne() throws Exception {
        try (Gated g = new Gated(1, 4)) {
            GenerationSession running = g.engine.submit(greedy(1000, 1));
            GenerationSession waiting = g.engine.submit(greedy(5, 2));
            g.gate.release(3); // prefill + 2 steps; the worker then waits inside its third step
            while (running.tokenCount() < 3) {
                Thread.onSpinWait();
            }
            waiting.cancel();
            running.cancel();
            assertTrue(!waiting.isDone() && !running.isDone(), "cancellation waits for the step in progress");
            g.gate.release(1); // the step in progress completes; both leave before another starts
            GenerationResult w = waiting.await(10, TimeUnit.SECONDS);
            assertEquals(FinishReason.CANCELLED, w.finishReason());
            assertEquals(0, w.generatedTokens());
            GenerationResult r = running.await(10, TimeUnit.SECONDS);
            assertEquals(FinishReason.CANCELLED, r.finishReason());
            assertEquals(4, r.generatedTokens(), "the step in progress still published its token");
            g.gate.release(1000);
            assertEquals(5, g.engine.submit(greedy(5, 2)).await().generatedTokens());
            assertEquals(0, g.fake.live);
        }
    }

    @Test
    void interruptingTheConsumerCancelsTheGeneration() throws Exception {
        try (Gated g = new Gated(2, 2)) {
            GenerationSession s = g.engine.submit(greedy(1000, 1));
            AtomicReference<Throwable> thrown = new AtomicReference<>();
            AtomicReference<Boolean> stillInterrupted = new AtomicReference<>();
            CountDownLatch reading = new CountDownLatch(1);
            Thread consumer = new Thread(() -> {
                try {
                    int n = 0;
                    for (int t : s) {
                        if (++n == 2) {
                            reading.countDown();
                        }
                    }
                } catch (Throwable t) {
                    thrown.set(t);
                    stillInterrupted.set(Thread.currentThread().isInterrupted());
                }
            });
            consumer.start();
            g.gate.release(2);
            assertTrue(reading.await(10, TimeUnit.SECONDS));
            consumer.interrupt();
            consumer.join(10_000);
            assertTrue(thrown.get() instanceof CancellationException, String.valueOf(thrown.get()));
            assertTrue(stillInterrupted.get(), "the consumer's interrupt status was swallowed");
            g.open();
            GenerationResult r = s.await(10, TimeUnit.SECONDS);
            assertEquals(FinishReason.CANCELLED, r.finishReason());
        }
    }

    @Test
    void interruptingAnAwaitingThreadCancelsToo() throws Exception {
        try (Gated g = new Gated(2, 2)) {
            GenerationSession s = g.engine.submit(greedy(1000, 1));
            AtomicReference<Throwable> thrown = new AtomicReference<>();
            Thread waiter = new Thread(() -> {
                try {
                    s.await();
                } catch (Throwable t) {
                    thrown.set(t);
                }
            });
            waiter.start();
            g.gate.release(1);
            Thread.sleep(50);
            waiter.interrupt();
            waiter.join(10_000);
            assertTrue(thrown.get() instanceof InterruptedException, String.valueOf(thrown.get()));
            assertTrue(s.isCancelRequested());
            g.open();
            assertEquals(FinishReason.CANCELLED, s.await(10, TimeUnit.SECONDS).finishReason());
        }
    }

    @Test
    void closingTheEngineCancelsEverything() throws Exception {
        Gated g = new Gated(1, 4);
        Engine engine = g.engine;
        GenerationSession a = engine.submit(greedy(1000, 1));
        GenerationSession b = engine.submit(greedy(1000, 2));
        CompletableFuture<ScoreResult> c = engine.score(new int[] {1, 2, 3});
        g.gate.release(3);
        while (a.tokenCount() < 2) {
            Thread.onSpinWait();
        }
        Thread closer = new Thread(engine::close);
        closer.start();
        // close() has raised its flag once it waits for the worker (held at the gate); opening the gate before
        // that lets a busy machine's worker finish all 1000 tokens of a (LENGTH) before close() runs at all
        while (closer.getState() == Thread.State.NEW || closer.getState() == Thread.State.RUNNABLE) {
            Thread.onSpinWait();
        }
        g.open();
        closer.join(10_000);
        assertEquals(FinishReason.CANCELLED, a.await(10, TimeUnit.SECONDS).finishReason());
        assertEquals(FinishReason.CANCELLED, b.await(10, TimeUnit.SECONDS).finishReason());
        assertTrue(c.isCompletedExceptionally());
        assertTrue(g.fake.closed);
        assertThrows(RejectedExecutionException.class, () -> engine.submit(greedy(1, 1)));
        engine.close();
    }

    @Test
    void aFactoryFailureIsThrownByStart() {
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> Engine.start(() -> {
            throw new IllegalStateException("no model");
        }, Engine.Options.defaults()));
        assertEquals("no model", e.getMessage());
    }

    @ParameterizedTest
    @ValueSource(strings = {"cached", "recompute"})
    void scoringSharesTheBatchAndMatchesTheModel(String kind) throws Exception {
        int[] text = TinyModels.ids("scoring the model, token by token");
        try (Engine engine = Engine.start(() -> TinyModels.engine(kind, 31, 4, 256), new Engine.Options(4, 4))) {
            GenerationSession g = engine.submit(req("meanwhile", SamplingParams.greedy(), 40));
            ScoreResult r = engine.score(text).get(60, TimeUnit.SECONDS);
            g.await();
            assertArrayEquals(text, r.tokens());
            assertEquals(text.length - 1, r.logprobs().length);
            // each log-probability is the model's for that token after its prefix alone
            try (RecomputeEngine e = TinyModels.recompute(31, 256); java.lang.foreign.Arena a = java.lang.foreign.Arena.ofConfined()) {
                for (int i = 1; i < text.length; i += 7) {
                    DecodeEngine.Prefill p = e.prefill(a.allocateFrom(java.lang.foreign.ValueLayout.JAVA_INT, text), i);
                    assertEquals((float) Sampler.logProb(p.logits(), 0, 256, text[i]), r.logprobs()[i - 1], "position " + i);
                    e.release(p.sequence());
                }
            }
            // causal routing: the decoder's view equals the full forward's cross-entropy
            assertEquals(r.report().crossEntropy(), r.meanNll(), 2e-5 * r.meanNll(), "mean NLL vs hspmn_model_forward's CE");
            assertEquals(2, r.report().numLayers());
            for (float fr : r.report().routedFraction()) {
                assertTrue(fr > 0 && fr < 1, "routed fraction " + fr);
            }
            int[][] sel = r.report().selected();
            if (kind.equals("cached")) {
                // the decoder's per-token routing agrees with the full forward's per-layer fraction
                for (int l = 0; l < 2; l++) {
                    assertEquals(r.report().routedFraction()[l], (float) sel[l].length / text.length, 1e-6, "layer " + l);
                    for (int k = 1; k < sel[l].length; k++) {
                        assertTrue(sel[l][k] > sel[l][k - 1] && sel[l][k] < text.length);
                    }
                }
            } else {
                assertEquals(null, sel);
            }
        }
    }
}
