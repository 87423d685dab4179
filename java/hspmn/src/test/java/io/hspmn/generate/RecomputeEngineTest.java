package io.hspmn.generate;

import io.hspmn.InvalidArgumentException;
import io.hspmn.LanguageModel;
import io.hspmn.Tensor;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class RecomputeEngineTest {
    private static float[] row(MemorySegment logits, int i, int vocab) {
        float[] r = new float[vocab];
        MemorySegment.copy(logits, ValueLayout.JAVA_FLOAT, 4L * vocab * i, r, 0, vocab);
        return r;
    }

    /** The logits after a whole history, computed by one prefill in a fresh engine call. */
    private static float[] alone(RecomputeEngine e, int[] history) {
        try (Arena a = Arena.ofConfined()) {
            DecodeEngine.Prefill p = e.prefill(a.allocateFrom(ValueLayout.JAVA_INT, history), history.length);
            float[] r = row(p.logits(), 0, e.vocabSize());
            e.release(p.sequence());
            return r;
        }
    }

    @Test
    void prefillIsTheModelsLastPositionLogits() {
        try (RecomputeEngine e = TinyModels.recompute(1, 64)) {
            int[] ids = {72, 101, 108, 108, 111};
            LanguageModel lm = TinyModels.create(1);
            float[] expect;
            try (Tensor tok = Tensor.ofInts(lm.context(), ids, 1, 5)) {
                expect = lm.logits(tok);
            } finally {
                Models.closeWithContext(lm);
            }
            assertArrayEquals(expect, alone(e, ids));
            assertEquals(0, e.liveSequences());
        }
    }

    @Test
    void batchedStepsOfMixedLengthsEqualEachSequenceAlone() {
        try (RecomputeEngine e = TinyModels.recompute(2, 64); Arena a = Arena.ofConfined()) {
            Random r = new Random(5);
            int[][] hist = {{1, 2, 3}, {9, 9, 9, 9, 9}, {200, 17, 33, 4, 5}, {7, 8, 9, 10, 11, 12, 13, 14}};
            int n = hist.length;
            DecodeEngine.Sequence[] seqs = new DecodeEngine.Sequence[n];
            int[][] h = new int[n][];
            for (int i = 0; i < n; i++) {
                seqs[i] = e.prefill(a.allocateFrom(ValueLayout.JAVA_INT, hist[i]), hist[i].length).sequence();
                h[i] = hist[i].clone();
            }
            MemorySegment next = a.allocate(4L * n);
            for (int step = 0; step < 4; step++) {
                for (int i = 0; i < n; i++) {
                    int t = r.nextInt(256);
                    next.setAtIndex(ValueLayout.JAVA_INT, i, t);
                    h[i] = java.util.Arrays.copyOf(h[i], h[i].length + 1);
                    h[i][h[i].length - 1] = t;
                }
                MemorySegment logits = e.step(seqs, n, next);
                assertEquals(4L * 256 * n, logits.byteSize());
                float[][] got = new float[n][];
                for (int i = 0; i < n; i++) {
                    got[i] = row(logits, i, 256);
                }
                for (int i = 0; i < n; i++) {
                    assertEquals(h[i].length, seqs[i].length());
                    assertArrayEquals(alone(e, h[i]), got[i], "sequence " + i + " at step " + step);
                }
            }
            // a subset, in another order: sequences leave and the rest go on
            DecodeEngine.Sequence[] sub = {seqs[3], seqs[0]};
            next.setAtIndex(ValueLayout.JAVA_INT, 0, 65);
            next.setAtIndex(ValueLayout.JAVA_INT, 1, 66);
            MemorySegment logits = e.step(sub, 2, next);
            float[] r3 = row(logits, 0, 256);
            float[] r0 = row(logits, 1, 256);
            int[] h3 = java.util.Arrays.copyOf(h[3], h[3].length + 1);
            h3[h3.length - 1] = 65;
            int[] h0 = java.util.Arrays.copyOf(h[0], h[0].length + 1);
            h0[h0.length - 1] = 66;
            assertArrayEquals(alone(e, h3), r3);
            assertArrayEquals(alone(e, h0), r0);
            for (DecodeEngine.Sequence s : seqs) {
                e.release(s);
            }
            assertEquals(0, e.liveSequences());
        }
    }

    @Test
    void aFailedStepLeavesEverySequenceAsItWas() {
        try (RecomputeEngine e = TinyModels.recompute(3, 16); Arena a = Arena.ofConfined()) {
            DecodeEngine.Sequence s1 = e.prefill(a.allocateFrom(ValueLayout.JAVA_INT, 1, 2), 2).sequence();
            DecodeEngine.Sequence s2 = e.prefill(a.allocateFrom(ValueLayout.JAVA_INT, 3), 1).sequence();
            MemorySegment next = a.allocateFrom(ValueLayout.JAVA_INT, 5, 300); // 300 is not a byte
            InvalidArgumentException ex = assertThrows(InvalidArgumentException.class,
                    () -> e.step(new DecodeEngine.Sequence[] {s1, s2}, 2, next));
            assertTrue(ex.getMessage().contains("300"), ex.getMessage());
            assertEquals(2, s1.length());
            assertEquals(1, s2.length());
            MemorySegment ok = a.allocateFrom(ValueLayout.JAVA_INT, 5, 6);
            MemorySegment l = e.step(new DecodeEngine.Sequence[] {s1, s2}, 2, ok);
            assertArrayEquals(alone(e, new int[] {1, 2, 5}), row(l, 0, 256));
        }
    }

    @Test
    void limitsAndReleasedSequencesAreRefused() {
        try (RecomputeEngine e = TinyModels.recompute(4, 3); Arena a = Arena.ofConfined()) {
            assertThrows(IllegalArgumentException.class, () -> e.prefill(a.allocateFrom(ValueLayout.JAVA_INT, 1, 2, 3, 4), 4));
            assertThrows(IllegalArgumentException.class, () -> e.prefill(a.allocate(4), 0));
            DecodeEngine.Sequence s = e.prefill(a.allocateFrom(ValueLayout.JAVA_INT, 1, 2), 2).sequence();
            MemorySegment next = a.allocateFrom(ValueLayout.JAVA_INT, 7);
            e.step(new DecodeEngine.Sequence[] {s}, 1, next);
            assertEquals(3, s.length());
            assertThrows(IllegalStateException.class, () -> e.step(new DecodeEngine.Sequence[] {s}, 1, next));
            e.release(s);
            e.release(s);
            assertThrows(IllegalStateException.class, () -> e.step(new DecodeEngine.Sequence[] {s}, 1, next));
            assertEquals(0, e.liveSequences());
        }
    }
}
