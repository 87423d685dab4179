package io.hspmn;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Create / forward / backward / close, 10,000 times: the library's live counters return exactly to the start. */
class LeakTest {
    static final int ITERATIONS = 10_000;

    @Test
    void everythingIsFreed() {
        HspmnConfig cfg = HspmnConfig.builder().dim(16).numHeads(2).numKvHeads(1).mlpRatio(2).sparsityK(0.5f).build();
        float[] x = BadInputTest.gaussian(2 * 6 * 16, 1);
        float[] dOut = BadInputTest.gaussian(2 * 6 * 16, 2);
        AllocStats start = Hspmn.allocStats();
        for (int i = 0; i < ITERATIONS; i++) {
            try (Context ctx = Context.create(ContextOptions.defaults().withBackend(Backend.CPU).withNumThreads(1));
                 Block block = Block.create(ctx, cfg, i);
                 Tensor tx = Tensor.of(ctx, DType.BF16, x, 2, 6, 16);
                 Tensor out = Tensor.create(ctx, DType.BF16, 2, 6, 16);
                 Tensor tdOut = Tensor.of(ctx, DType.BF16, dOut, 2, 6, 16);
                 Tensor dX = Tensor.create(ctx, DType.BF16, 2, 6, 16)) {
                block.forward(tx, out, ForwardOptions.inference());
                block.forward(tx, out, ForwardOptions.training(7, i, 0));
                block.backward(tdOut, 1f, dX);
                block.route(tx, null, ForwardOptions.inference());
                tx.segment(); // the per-tensor view arena must be released too
                block.param("attn.q");
                block.grad("attn.q");
                if (i == 0) {
                    // the counters must see these objects, or equality at the end would prove nothing
                    AllocStats mid = Hspmn.allocStats();
                    assertEquals(start.liveContexts() + 1, mid.liveContexts());
                    assertEquals(start.liveBlocks() + 1, mid.liveBlocks());
                    assertEquals(start.liveTensors() + 6, mid.liveTensors(), "4 tensors + the block's aux and d_aux");
                    assertTrue(mid.liveBytes() > start.liveBytes());
                }
            }
            if (i % 1000 == 999) {
                assertEquals(start.liveBytes(), Hspmn.allocStats().liveBytes(), "leak after " + (i + 1) + " iterations");
            }
        }
        // a context closed with objects still open from it closes them too
        Context ctx = Context.create(Backend.CPU);
        Block.create(ctx, cfg, 1);
        Tensor.create(ctx, DType.F32, 3, 3);
        ctx.close();

        AllocStats end = Hspmn.allocStats();
        assertEquals(start.liveTensors(), end.liveTensors(), "live tensors");
        assertEquals(start.liveBlocks(), end.liveBlocks(), "live blocks");
        assertEquals(start.liveContexts(), end.liveContexts(), "live contexts");
        assertEquals(start.liveBytes(), end.liveBytes(), "live bytes");
        assertTrue(end.peakBytes() >= end.liveBytes());
    }
}
