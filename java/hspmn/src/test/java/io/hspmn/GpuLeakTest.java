package io.hspmn;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * 1,000 create / forward / backward / close cycles on the CUDA backend with device tensors: the memory
 * the library holds (device and pinned bytes are counted in hspmn_alloc_stats) returns to where it started.
 */
@Tag("gpu")
class GpuLeakTest {
    static final int ITERATIONS = 1_000;

    @Test
    void deviceMemoryReturnsToTheStart() {
        GpuAssumptions.requireCuda();
        // head_dim 64: a size the Triton attention is compiled for
        HspmnConfig cfg = HspmnConfig.builder().dim(128).numHeads(2).numKvHeads(1).mlpRatio(2).sparsityK(0.25f).build();
        float[] x = BadInputTest.gaussian(2 * 40 * 128, 1);
        float[] dOut = BadInputTest.gaussian(2 * 40 * 128, 2);
        AllocStats before = Hspmn.allocStats();
        try (Context ctx = Context.create(Backend.CUDA)) {
            // One cycle first: the context keeps per-shape caches (cuBLASLt algorithms, loaded Triton
            // modules) for its lifetime; they are made once and freed with the context (checked below).
            cycle(ctx, cfg, x, dOut, -1, null);
            AllocStats start = Hspmn.allocStats();
            for (int i = 0; i < ITERATIONS; i++) {
                cycle(ctx, cfg, x, dOut, i, start);
                if (i % 100 == 99) {
                    assertEquals(start.liveBytes(), Hspmn.allocStats().liveBytes(), "leak after " + (i + 1) + " cycles");
                }
            }
            AllocStats end = Hspmn.allocStats();
            assertEquals(start.liveTensors(), end.liveTensors(), "live tensors");
            assertEquals(start.liveBlocks(), end.liveBlocks(), "live blocks");
            assertEquals(start.liveBytes(), end.liveBytes(), "live bytes");
        }
        AllocStats after = Hspmn.allocStats();
        assertEquals(before.liveContexts(), after.liveContexts(), "live contexts");
        assertEquals(before.liveBytes(), after.liveBytes(), "the context's caches are freed with it");
    }

    private static void cycle(Context ctx, HspmnConfig cfg, float[] x, float[] dOut, int i, AllocStats start) {
        try (Block block = Block.create(ctx, cfg, i + 1L);
             Tensor tx = Tensor.create(ctx, DType.BF16, MemoryKind.DEVICE, 2, 40, 128);
             Tensor out = Tensor.create(ctx, DType.BF16, MemoryKind.DEVICE, 2, 40, 128);
             Tensor tdOut = Tensor.create(ctx, DType.BF16, MemoryKind.DEVICE, 2, 40, 128);
             Tensor dX = Tensor.create(ctx, DType.BF16, MemoryKind.DEVICE, 2, 40, 128)) {
            tx.copyFrom(x);
            tdOut.copyFrom(dOut);
            block.forward(tx, out, ForwardOptions.training(7, Math.max(i, 0), 0));
            block.backward(tdOut, 1f, dX);
            if (i == 0) { // the counters see the cycle's own memory
                assertTrue(Hspmn.allocStats().liveBytes() > start.liveBytes(), "the counters see device memory");
                for (float v : dX.toFloatArray()) {
                    assertTrue(Float.isFinite(v), "d_x is finite");
                }
            }
        }
    }
}
