package io.hspmn;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Decoder on the CPU backend: cached logits equal the full forward's, greedy continuations agree. */
class DecoderTest {
    static ModelConfig config(Routing routing) {
        return new ModelConfig(64, 2, HspmnConfig.builder().dim(32).numHeads(4).numKvHeads(2).mlpRatio(2)
                .routing(routing).build());
    }

    static int argmax(float[] v, int from, int n) {
        int best = 0;
        for (int i = 1; i < n; i++) {
            if (v[from + i] > v[from + best]) {
                best = i;
            }
        }
        return best;
    }

    @Test
    void decodeEqualsFullForwardAndGreedyAgrees() {
        try (Context ctx = Context.create(Backend.CPU)) {
            LanguageModel m = LanguageModel.create(ctx, config(Routing.THRESHOLD), 5);
            // router bias 0: about half the tokens route, so both the attention and the skip path run
            m.setParam("blocks.0.router.b", new float[] {0f});
            m.setParam("blocks.1.router.b", new float[] {0f});
            int[] prompt = {7, 3, 19, 42, 11, 5};
            int[] seq = new int[prompt.length + 16];
            System.arraycopy(prompt, 0, seq, 0, prompt.length);
            try (Decoder dec = m.decoder(2, 64)) {
                float[] logits = dec.append(1, prompt);
                int len = prompt.length;
                for (int step = 0; step < 16; step++) {
                    try (Tensor t = Tensor.ofInts(ctx, java.util.Arrays.copyOf(seq, len), 1, len)) {
                        float[] full = m.logits(t);
                        assertArrayEquals(full, logits, "logits after " + len + " tokens");
                    }
                    seq[len] = argmax(logits, 0, 64);
                    logits = dec.append(1, seq[len]);
                    len++;
                }
                assertEquals(len, dec.length(1));
                assertEquals(0, dec.length(0));
                dec.reset(1);
                assertEquals(0, dec.length(1));
                InvalidArgumentException e = assertThrows(InvalidArgumentException.class, () -> dec.append(2, 1));
                assertTrue(e.getMessage().contains("slots[0] = 2"), e.getMessage());
                e = assertThrows(InvalidArgumentException.class, () -> dec.append(0, 64));
                assertTrue(e.getMessage().contains("token id"), e.getMessage());
                HspmnStateException busy = assertThrows(HspmnStateException.class, m::close);
                assertTrue(busy.getMessage().contains("decoder"), busy.getMessage());
            }
        }
    }

    @Test
    void topKCannotDecode() {
        try (Context ctx = Context.create(Backend.CPU)) {
            LanguageModel m = LanguageModel.create(ctx, config(Routing.TOPK), 5);
            InvalidArgumentException e = assertThrows(InvalidArgumentException.class, () -> m.decoder(1, 8));
            assertTrue(e.getMessage().contains("top-k"), e.getMessage());
        }
    }

    @Test
    void closingTheContextClosesTheDecoderFirst() {
        Context ctx = Context.create(Backend.CPU);
        LanguageModel m = LanguageModel.create(ctx, config(Routing.THRESHOLD), 5);
        Decoder dec = m.decoder(1, 8);
        ctx.close();
        assertThrows(IllegalStateException.class, () -> dec.length(0));
    }
}
