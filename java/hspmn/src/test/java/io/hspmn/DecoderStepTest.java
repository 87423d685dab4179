package io.hspmn;

import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Decoder.step (hspmn_decoder_step) on the CPU backend: the next token sampled natively, only ids back. */
class DecoderStepTest {
    private static LanguageModel model(Context ctx) {
        LanguageModel m = LanguageModel.create(ctx, DecoderTest.config(Routing.THRESHOLD), 5);
        m.setParam("blocks.0.router.b", new float[] {0f});
        m.setParam("blocks.1.router.b", new float[] {0f});
        return m;
    }

    /**
     * Three slots of different lengths step together, greedily: each next id is the argmax of the logits an
     * append of the same token gives on a twin decoder, and the step's logits copy equals them bit for bit.
     */
    @Test
    void greedyStepsEqualAppendAndArgmax() {
        try (Context ctx = Context.create(Backend.CPU)) {
            LanguageModel m = model(ctx);
            int[][] prompts = {{7, 3, 19}, {42}, {11, 5, 9, 60, 2}};
            try (Decoder dec = m.decoder(4, 64); Decoder twin = m.decoder(4, 64); StepArrays a = new StepArrays(4);
                 Tensor logits = Tensor.create(ctx, DType.F32, 3, 64)) {
                int[] next = new int[3];
                for (int j = 0; j < 3; j++) {
                    int slot = j + 1; // slot 0 stays empty
                    dec.append(slot, prompts[j]);
                    next[j] = DecoderTest.argmax(twin.append(slot, prompts[j]), 0, 64);
                }
                for (int step = 0; step < 6; step++) {
                    for (int j = 0; j < 3; j++) {
                        a.set(j, j + 1, next[j]).greedy(j);
                    }
                    dec.step(3, a.slots(), a.tokens(), a.params(), a.next(), logits);
                    float[] got = logits.toFloatArray();
                    for (int j = 0; j < 3; j++) {
                        float[] want = twin.append(j + 1, next[j]);
                        float[] row = java.util.Arrays.copyOfRange(got, 64 * j, 64 * (j + 1));
                        assertArrayEquals(want, row, "slot " + (j + 1) + " step " + step);
                        assertEquals(DecoderTest.argmax(want, 0, 64), a.next(j), "slot " + (j + 1) + " step " + step);
                        next[j] = a.next(j);
                    }
                }
                for (int j = 0; j < 3; j++) {
                    assertEquals(prompts[j].length + 6, dec.length(j + 1));
                }
                assertEquals(0, dec.length(0));
                // the array form, without logits
                a.set(0, 2, next[1]).greedy(0);
                dec.step(a, 1);
                assertEquals(prompts[1].length + 7, dec.length(2));
            }
        }
    }

    /** Sampling parameters reach the native sampler: a seeded draw is reproducible and moves with the draw index. */
    @Test
    void seededDrawsAreReproducible() {
        try (Context ctx = Context.create(Backend.CPU)) {
            LanguageModel m = model(ctx);
            try (Decoder dec = m.decoder(2, 300); StepArrays a = new StepArrays(2)) {
                int[][] out = new int[2][64];
                for (int slot = 0; slot < 2; slot++) {
                    dec.append(slot, 1, 2, 3);
                    int t = 4;
                    for (int i = 0; i < 64; i++) {
                        // temperature 2 on a random model: nearly uniform, so the stream decides
                        a.set(0, slot, t).sampling(0, 2f, 0, 1f, 99L, i + 1);
                        dec.step(a, 1);
                        t = a.next(0);
                        out[slot][i] = t;
                    }
                }
                assertArrayEquals(out[0], out[1], "the same history, seed and draws give the same tokens");
                long distinct = java.util.Arrays.stream(out[0]).distinct().count();
                assertTrue(distinct > 8, "sampling at temperature 2 gave only " + distinct + " distinct tokens");
            }
        }
    }

    @Test
    void badStepsAppendNothing() {
        try (Context ctx = Context.create(Backend.CPU)) {
            LanguageModel m = model(ctx);
            try (Decoder dec = m.decoder(2, 4); StepArrays a = new StepArrays(3)) {
                dec.append(0, 1, 2, 3);
                a.set(0, 0, 5).set(1, 1, 6);
                assertThrows(IllegalArgumentException.class, () -> dec.step(a, 3)); // n > max_seqs
                a.set(1, 2, 6);
                InvalidArgumentException e = assertThrows(InvalidArgumentException.class, () -> dec.step(a, 2));
                assertTrue(e.getMessage().contains("slots[1] = 2"), e.getMessage());
                a.set(1, 0, 6);
                e = assertThrows(InvalidArgumentException.class, () -> dec.step(a, 2));
                assertTrue(e.getMessage().contains("appears twice"), e.getMessage());
                a.set(0, 0, 64);
                e = assertThrows(InvalidArgumentException.class, () -> dec.step(a, 1));
                assertTrue(e.getMessage().contains("tokens[0] = 64"), e.getMessage());
                a.set(0, 0, 5).sampling(0, 1f, 0, 0f, 1L, 1L); // top_p 0
                assertThrows(InvalidArgumentException.class, () -> dec.step(a, 1));
                a.greedy(0);
                assertEquals(3, dec.length(0), "nothing was appended");
                dec.step(a, 1);
                assertEquals(4, dec.length(0));
                e = assertThrows(InvalidArgumentException.class, () -> dec.step(a, 1));
                assertTrue(e.getMessage().contains("full"), e.getMessage());
                MemorySegment heap = MemorySegment.ofArray(new int[2]);
                assertThrows(IllegalArgumentException.class, () -> dec.step(1, heap, a.tokens(), a.params(), a.next(), null));
                assertThrows(IllegalArgumentException.class,
                        () -> dec.step(1, a.slots(), a.tokens(), a.params().asSlice(0, 8), a.next(), null));
                e = assertThrows(InvalidArgumentException.class, () -> dec.capture(1, 2));
                assertTrue(e.getMessage().contains("CUDA"), e.getMessage());
            }
        }
    }
}
