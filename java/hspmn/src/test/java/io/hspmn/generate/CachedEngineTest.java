package io.hspmn.generate;

import io.hspmn.Routing;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class CachedEngineTest {
    private static float[] row(MemorySegment logits, int i) {
        float[] r = new float[256];
        MemorySegment.copy(logits, ValueLayout.JAVA_FLOAT, 4L * 256 * i, r, 0, 256);
        return r;
    }

    /** The logits after a whole history, by the recompute engine (the full forward of hspmn_model_logits). */
    private static float[] recomputed(RecomputeEngine r, int[] history) {
        try (Arena a = Arena.ofConfined()) {
            DecodeEngine.Prefill p = r.prefill(a.allocateFrom(ValueLayout.JAVA_INT, history), history.length);
            float[] out = row(p.logits(), 0);
            r.release(p.sequence());
            return out;
        }
    }

    @Test
    void cachedStepsEqualTheFullForwardBitForBit() {
        try (CachedEngine c = TinyModels.cached(61, 4, 64); RecomputeEngine r = TinyModels.recompute(61, 64);
             Arena a = Arena.ofConfined()) {
            Random rnd = new Random(8);
            int[][] h = {{1, 2, 3}, {40, 41, 42, 43, 44, 45}, {7}, {100, 101, 102, 103, 104, 105, 106, 107, 108, 109}};
            DecodeEngine.Sequence[] seqs = new DecodeEngine.Sequence[4];
            for (int i = 0; i < 4; i++) {
                DecodeEngine.Prefill p = c.prefill(a.allocateFrom(ValueLayout.JAVA_INT, h[i]), h[i].length);
                assertArrayEquals(recomputed(r, h[i]), row(p.logits(), 0), "prefill " + i);
                seqs[i] = p.sequence();
            }
            MemorySegment next = a.allocate(16);
            for (int step = 0; step < 12; step++) {
                // sequences leave and come back in other orders: 4, then 3, then 2 at a time
                int n = step < 4 ? 4 : step < 8 ? 3 : 2;
                DecodeEngine.Sequence[] batch = new DecodeEngine.Sequence[n];
                int[] which = new int[n];
                for (int j = 0; j < n; j++) {
                    which[j] = (step + j) % 4;
                    batch[j] = seqs[which[j]];
                    int t = rnd.nextInt(256);
                    next.setAtIndex(ValueLayout.JAVA_INT, j, t);
                    h[which[j]] = Arrays.copyOf(h[which[j]], h[which[j]].length + 1);
                    h[which[j]][h[which[j]].length - 1] = t;
                }
                MemorySegment logits = c.step(batch, n, next);
                float[][] got = new float[n][];
                for (int j = 0; j < n; j++) {
                    got[j] = row(logits, j);
                }
                for (int j = 0; j < n; j++) {
                    assertEquals(h[which[j]].length, batch[j].length());
                    assertArrayEquals(recomputed(r, h[which[j]]), got[j], "sequence " + which[j] + " at step " + step);
                }
            }
            for (DecodeEngine.Sequence s : seqs) {
                c.release(s);
            }
            assertEquals(0, c.liveSequences());
        }
    }

    @Test
    void slotsAreReusedAfterReleaseAndLimited() {
        try (CachedEngine c = TinyModels.cached(62, 2, 8); Arena a = Arena.ofConfined()) {
            MemorySegment p = a.allocateFrom(ValueLayout.JAVA_INT, 5, 6, 7);
            DecodeEngine.Prefill first = c.prefill(p, 3);
            float[] firstLogits = row(first.logits(), 0);
            DecodeEngine.Sequence s2 = c.prefill(p, 2).sequence();
            assertThrows(IllegalStateException.class, () -> c.prefill(p, 1));
            c.release(first.sequence());
            c.release(first.sequence());
            // the freed slot starts empty: the same prompt gives the same logits
            DecodeEngine.Prefill again = c.prefill(p, 3);
            assertArrayEquals(firstLogits, row(again.logits(), 0));
            assertThrows(IllegalArgumentException.class, () -> c.prefill(a.allocate(40), 9));
            MemorySegment next = a.allocateFrom(ValueLayout.JAVA_INT, 1, 2);
            DecodeEngine.Sequence[] both = {again.sequence(), s2};
            for (int i = 0; i < 5; i++) {
                c.step(both, 2, next);
            }
            assertEquals(8, again.sequence().length());
            assertThrows(IllegalStateException.class, () -> c.step(both, 2, next));
            c.release(s2);
            assertThrows(IllegalStateException.class, () -> c.step(new DecodeEngine.Sequence[] {s2}, 1, next));
        }
    }

    @Test
    void aBadTokenFailsTheStepAndAppendsNothing() {
        try (CachedEngine c = TinyModels.cached(63, 2, 16); RecomputeEngine r = TinyModels.recompute(63, 16);
             Arena a = Arena.ofConfined()) {
            DecodeEngine.Sequence s = c.prefill(a.allocateFrom(ValueLayout.JAVA_INT, 1, 2), 2).sequence();
            assertThrows(io.hspmn.InvalidArgumentException.class,
                    () -> c.step(new DecodeEngine.Sequence[] {s}, 1, a.allocateFrom(ValueLayout.JAVA_INT, 256)));
            assertEquals(2, s.length());
            MemorySegment l = c.step(new DecodeEngine.Sequence[] {s}, 1, a.allocateFrom(ValueLayout.JAVA_INT, 3));
            assertArrayEquals(recomputed(r, new int[] {1, 2, 3}), row(l, 0));
        }
    }

    @Test
    void topKRoutingCannotDecode() {
        var lm = TinyModels.create(64, Routing.TOPK);
        try {
            assertThrows(IllegalArgumentException.class, () -> new CachedEngine(lm, 2, 16, false));
            try (DecodeEngine e = Models.engine(lm, Models.EngineKind.AUTO, 2, 16, false)) {
                assertTrue(e instanceof RecomputeEngine, "auto picks recompute for top-k routing");
            }
        } finally {
            Models.closeWithContext(lm);
        }
    }
}
