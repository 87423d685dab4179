package io.hspmn.generate;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Continuous batching: prompts are appended in pieces of at most the prefill chunk between decode steps,
 * so a long prompt holds the running streams up by one piece per token, and no output changes.
 */
@Timeout(120)
class ContinuousBatchingTest {
    static final int CHUNK = 64;
    static final int LONG = 1000; // 16 pieces: 15 of 64 and one of 40
    static final int MAX_LENGTH = 2048;

    private static int[] randomIds(int n, long seed) {
        Random r = new Random(seed);
        int[] ids = new int[n];
        for (int i = 0; i < n; i++) {
            ids[i] = r.nextInt(256);
        }
        return ids;
    }

    /** Each request alone on a fresh engine, its whole prompt in one piece: the tokens to expect. */
    private static int[][] oneByOne(List<GenerationRequest> reqs, long seed) throws InterruptedException {
        int[][] out = new int[reqs.size()][];
        try (CachedEngine e = TinyModels.cached(seed, 1, MAX_LENGTH); Generator g = new Generator(e, 1, Integer.MAX_VALUE)) {
            for (int i = 0; i < reqs.size(); i++) {
                GenerationSession s = g.start(reqs.get(i), null);
                g.runUntilIdle();
                GenerationResult r = s.await();
                assertEquals(FinishReason.LENGTH, r.finishReason());
                out[i] = r.tokens();
            }
        }
        return out;
    }

    /**
     * Three greedy streams run; once each has a token, a 1,000-token prompt arrives (submitted from a
     * listener, so it arrives mid-stream without any sleeping). While it prefills, in 16 pieces of at most
     * 64 tokens, there is exactly one decode step between two pieces and every running stream gets a token
     * there; all four outputs equal those of running the requests one at a time with whole-prompt prefills.
     */
    @Test
    void aLongPromptHoldsRunningStreamsUpByOneChunkAndChangesNoToken() throws Exception {
        String[] prompts = {"Hello", "The engine", "0123456789"};
        List<GenerationRequest> reqs = new ArrayList<>();
        for (String p : prompts) {
            reqs.add(GenerationRequest.of(TinyModels.ids(p), SamplingParams.greedy(), 80));
        }
        GenerationRequest longReq = GenerationRequest.of(randomIds(LONG, 5), SamplingParams.greedy(), 12);
        List<GenerationRequest> all = new ArrayList<>(reqs);
        all.add(longReq);
        int[][] expected = oneByOne(all, 71);

        RecordingEngine rec = new RecordingEngine(TinyModels.cached(71, 4, MAX_LENGTH));
        rec.holdFirstCall = new CountDownLatch(1);
        CountDownLatch go = rec.holdFirstCall;
        try (Engine engine = Engine.start(() -> rec, new Engine.Options(4, 4, CHUNK))) {
            boolean[] started = new boolean[3];
            AtomicReference<GenerationSession> longSession = new AtomicReference<>();
            List<GenerationSession> sessions = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                int stream = i;
                sessions.add(engine.submit(reqs.get(i), rec.tokens(i, (index, token, lp) -> {
                    // the decode thread: the first time all three streams have a token, the long prompt arrives
                    started[stream] = true;
                    if (started[0] && started[1] && started[2] && longSession.get() == null) {
                        longSession.set(engine.submit(longReq, rec.tokens(3, null)));
                    }
                })));
            }
            go.countDown();
            for (int i = 0; i < 3; i++) {
                GenerationResult r = sessions.get(i).await(60, TimeUnit.SECONDS);
                assertEquals(FinishReason.LENGTH, r.finishReason(), "stream " + i);
                assertArrayEquals(expected[i], r.tokens(), "stream " + i + " changed when batched with a chunked prefill");
            }
            assertNotNull(longSession.get(), "the long prompt was never submitted");
            GenerationResult lr = longSession.get().await(60, TimeUnit.SECONDS);
            assertArrayEquals(expected[3], lr.tokens(), "the long prompt's output changed when prefilled in pieces");

            List<RecordingEngine.Event> ev = rec.snapshot();
            List<Integer> pieces = new ArrayList<>(); // positions in ev of the long prompt's pieces
            DecodeEngine.Sequence longSeq = null;
            for (int i = 0; i < ev.size(); i++) {
                if (ev.get(i) instanceof RecordingEngine.Piece p && (longSeq == p.sequence()
                        || longSeq == null && p.count() == CHUNK)) {
                    longSeq = p.sequence();
                    pieces.add(i);
                    assertTrue(p.count() <= CHUNK, "a piece of " + p.count() + " tokens");
                }
            }
            assertEquals((LONG + CHUNK - 1) / CHUNK, pieces.size(), "pieces of the long prompt");
            int sum = 0;
            for (int at : pieces) {
                sum += ((RecordingEngine.Piece) ev.get(at)).count();
            }
            assertEquals(LONG, sum);
            for (int k = 0; k + 1 < pieces.size(); k++) {
                int steps = 0;
                boolean[] got = new boolean[3];
                for (int i = pieces.get(k) + 1; i < pieces.get(k + 1); i++) {
                    if (ev.get(i) instanceof RecordingEngine.Step) {
                        steps++;
                    } else if (ev.get(i) instanceof RecordingEngine.Token t && t.stream() < 3) {
                        got[t.stream()] = true;
                    } else if (ev.get(i) instanceof RecordingEngine.Piece p) {
                        throw new AssertionError("another piece of " + p.count() + " between pieces " + k + " and " + (k + 1));
                    }
                }
                assertEquals(1, steps, "decode steps between pieces " + k + " and " + (k + 1));
                for (int s = 0; s < 3; s++) {
                    assertTrue(got[s], "stream " + s + " got no token between pieces " + k + " and " + (k + 1));
                }
            }
            // the long prompt's first token comes with its last piece, before the next step
            int last = pieces.getLast();
            assertEquals(new RecordingEngine.Token(3, 0), ev.get(last + 1));
            assertEquals(4, engine.stats().prefills());
        }
    }

    /** Queued prompts share one budget of {@code chunk} tokens per step, oldest first. */
    @Test
    void queuedPromptsShareOneChunkPerStepOldestFirst() throws Exception {
        RecordingEngine rec = new RecordingEngine(new FakeEngine(64, 200, 4));
        try (Generator g = new Generator(rec, 4, 10)) {
            int[][] prompts = {{1, 2, 3, 4}, {5, 6, 7, 8}, new int[25]};
            GenerationSession[] s = new GenerationSession[3];
            for (int i = 0; i < 3; i++) {
                s[i] = new GenerationSession(GenerationRequest.of(prompts[i], SamplingParams.greedy(), 6), rec.tokens(i, null));
                g.enqueue(s[i].slot);
            }
            assertEquals(3, g.active());
            assertEquals(3, g.prefilling());
            assertEquals(0, s[0].tokenCount());
            g.step(); // 4 + 4 + 2 of the third; the first two get their first and second tokens
            assertEquals(2, s[0].tokenCount());
            assertEquals(2, s[1].tokenCount());
            assertEquals(0, s[2].tokenCount());
            g.step(); // 10 more of the third
            g.step(); // 10 more
            assertEquals(0, s[2].tokenCount());
            g.step(); // its last 3, its first token, then a step with it
            assertEquals(2, s[2].tokenCount());
            assertEquals(0, g.prefilling());
            g.runUntilIdle();
            List<Integer> counts = new ArrayList<>();
            for (RecordingEngine.Event e : rec.snapshot()) {
                if (e instanceof RecordingEngine.Piece p) {
                    counts.add(p.count());
                }
            }
            assertEquals(List.of(4, 4, 2, 10, 10, 3), counts);
            assertEquals(6, g.prefillPieces());
            for (int i = 0; i < 3; i++) {
                assertArrayEquals(FakeEngine.greedy(prompts[i], 6, 64), s[i].await().tokens(), "prompt " + i);
            }
            assertEquals(0, ((FakeEngine) rec.inner).live);
        }
    }

    @Test
    void aSequenceCancelledDuringItsPrefillIsReleased() throws Exception {
        FakeEngine f = new FakeEngine(64, 200, 2);
        try (Generator g = new Generator(f, 2, 8)) {
            GenerationSession s = new GenerationSession(GenerationRequest.of(new int[40], SamplingParams.greedy(), 5), null);
            g.enqueue(s.slot);
            g.step();
            g.step();
            assertEquals(1, f.live);
            s.cancel();
            assertTrue(!g.step(), "nothing left in flight");
            assertEquals(FinishReason.CANCELLED, s.await().finishReason());
            assertEquals(0, s.await().generatedTokens());
            assertEquals(0, f.live);
            assertEquals(0, g.active());
        }
    }

    /** The engines' pieces: logits after a prompt appended in pieces equal those after one call, bit for bit. */
    @ParameterizedTest
    @ValueSource(strings = {"cached", "recompute"})
    void aPromptInPiecesGivesTheLogitsOfOneCall(String kind) {
        int[] prompt = randomIds(300, 9);
        try (DecodeEngine e = TinyModels.engine(kind, 41, 2, 512); Arena a = Arena.ofConfined()) {
            MemorySegment ids = a.allocateFrom(ValueLayout.JAVA_INT, prompt);
            float[] whole = new float[256];
            DecodeEngine.Prefill p = e.prefill(ids, prompt.length);
            MemorySegment.copy(p.logits(), ValueLayout.JAVA_FLOAT, 0, whole, 0, 256);
            DecodeEngine.Sequence s = e.open();
            int at = 0;
            for (int piece : new int[] {1, 63, 64, 100, 72}) {
                MemorySegment l = e.extend(s, ids.asSlice(4L * at), piece, at + piece == prompt.length);
                at += piece;
                if (at < prompt.length) {
                    assertNull(l, "logits nobody asked for");
                } else {
                    float[] got = new float[256];
                    MemorySegment.copy(l, ValueLayout.JAVA_FLOAT, 0, got, 0, 256);
                    // bit for bit on the CPU backend: how the prompt is split changes no sum there
                    assertArrayEquals(whole, got);
                }
            }
            assertEquals(prompt.length, s.length());
            e.release(s);
            e.release(p.sequence());
        }
    }
}
