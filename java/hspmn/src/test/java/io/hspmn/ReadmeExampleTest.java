package io.hspmn;

import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The README's "API in ten lines", line for line between the markers, so the docs cannot drift from the API. */
class ReadmeExampleTest {

    @Test
    void readmeExampleRuns() {
        float[] data = new float[2 * 512 * 256];
        Random rnd = new Random(3);
        for (int i = 0; i < data.length; i++) {
            data[i] = (float) rnd.nextGaussian();
        }
        // README begin
        try (Context ctx = Context.create(Backend.AUTO)) {                   // closing it closes all made from it
            HspmnConfig cfg = HspmnConfig.builder().dim(256).numHeads(4).numKvHeads(2).sparsityK(0.2f).build();
            Block block = Block.create(ctx, cfg, 42L);                        // seeded init
            Tensor x = Tensor.of(ctx, DType.BF16, data, 2, 512, 256);         // float[] -> off-heap bf16
            Tensor out = Tensor.create(ctx, DType.BF16, 2, 512, 256);
            float aux = block.forward(x, out, ForwardOptions.training(7L, 0, 0));   // Gumbel noise keyed by (seed, step, layer)
            Tensor dX = Tensor.create(ctx, DType.BF16, 2, 512, 256);
            block.backward(out, 1.0f, dX);                                    // d_out = out here; routing held fixed
            float[] gradQ = block.grad("attn.q");                             // PyTorch state_dict names
            MemorySegment view = out.segment();                               // zero-copy view of host memory
            // README end
            assertTrue(Float.isFinite(aux) && aux > 0, "aux " + aux);
            assertEquals(256 * 256, gradQ.length);
            assertTrue(java.util.Arrays.stream(toDouble(gradQ)).anyMatch(v -> v != 0), "attn.q gets a gradient");
            assertEquals(2L * 512 * 256 * 2, view.byteSize());
        }
        assertEquals(0, Hspmn.allocStats().liveTensors());
    }

    /** The README shows exactly the lines between the markers above. */
    @Test
    void readmeShowsTheseLines() throws java.io.IOException {
        ReadmeExamples.assertReadmeShows(getClass());
    }

    private static double[] toDouble(float[] a) {
        double[] d = new double[a.length];
        for (int i = 0; i < a.length; i++) {
            d[i] = a[i];
        }
        return d;
    }
}
