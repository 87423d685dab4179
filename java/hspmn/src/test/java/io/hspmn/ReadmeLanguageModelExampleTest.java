package io.hspmn;

import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The README's language-model example, line for line between the markers, so the docs cannot drift from the API. */
class ReadmeLanguageModelExampleTest {

    @Test
    void readmeExampleRuns() {
        byte[] text = "the quick brown fox jumps over the lazy dog; ".repeat(50).getBytes(StandardCharsets.UTF_8);
        int[] tok = new int[4 * 256];
        int[] tgt = new int[4 * 256];
        for (int i = 0; i < tok.length; i++) {
            tok[i] = text[i % 1000] & 0xFF;
            tgt[i] = text[i % 1000 + 1] & 0xFF;
        }
        long seed = 7;
        // README begin
        try (Context ctx = Context.create(Backend.CPU)) {
            HspmnConfig block = HspmnConfig.builder().dim(128).numHeads(4).numKvHeads(2).routing(Routing.THRESHOLD).build();
            LanguageModel lm = LanguageModel.create(ctx, ModelConfig.byteLevel(2, block), 1L);  // V = 256, 2 layers
            Tensor tokens = Tensor.ofInts(ctx, tok, 4, 256);                   // [B, S] i32 bytes
            Tensor targets = Tensor.ofInts(ctx, tgt, 4, 256);                  // the byte after each token
            LossResult first = null, last = null;
            for (long step = 0; step < 20; step++) {
                last = lm.forward(tokens, targets, ModelForwardOptions.training(seed, step, 0.2f));  // noise step, aux target
                lm.backward(1f, false);                     // A micro-batches: backward(1f / A, micro > 0)
                AdamwResult u = lm.adamwStep(AdamwOptions.of(step + 1, 3e-3f).withWeightDecay(0.1f).withMaxGradNorm(1f));
                first = first == null ? last : first;
            }
            float[] next = lm.logits(tokens);               // [B, V] f32: the logits after each sequence's last byte
            // README end
            assertEquals(4 * 256, next.length);
            assertTrue(last.crossEntropy() < first.crossEntropy() - 1, first.crossEntropy() + " -> " + last.crossEntropy());
        }
        assertEquals(0, Hspmn.allocStats().liveTensors());
    }

    /** The README shows exactly the lines between the markers above. */
    @Test
    void readmeShowsTheseLines() throws java.io.IOException {
        ReadmeExamples.assertReadmeShows(getClass());
    }
}
