package io.hspmn;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Block.captureForward on the CUDA backend: a replay computes exactly what an ordinary forward computes
 * (bit for bit) on the input written into the bound tensor and the current parameters; regrown scratch
 * invalidates the graph; bound tensors and the block refuse to close while it is open; replays hold no
 * new memory. Tagged gpu: skipped without CUDA, failing instead under {@code -Pgpu}.
 */
@Tag("gpu")
class GpuForwardGraphTest extends GraphFixture {
    // head dim 64: a size the Triton attention is compiled for
    static final int S = 40, D = 128;

    @BeforeEach
    void setUp() {
        GpuAssumptions.requireCuda();
        open(Context.create(Backend.CUDA), S, D, 11, MemoryKind.DEVICE, 1);
    }

    private Tensor device(long... shape) {
        return Tensor.create(ctx, DType.BF16, MemoryKind.DEVICE, shape);
    }

    /** out and aux of an ordinary inference forward of x, into fresh tensors. */
    private float[][] ordinaryForward(Tensor in) {
        try (Tensor o = device(in.shape()); Tensor a = Tensor.create(ctx, DType.F32, MemoryKind.DEVICE, 1)) {
            block.forward(in, o, a, ForwardOptions.inference());
            return new float[][] {o.toFloatArray(), a.toFloatArray()};
        }
    }

    private void assertReplayMatches(ForwardGraph g, String when) {
        g.launch();
        ctx.synchronize();
        float[] gotOut = g.output().toFloatArray();
        float[] gotAux = g.aux().toFloatArray();
        float[][] want = ordinaryForward(g.input());
        // assertArrayEquals on float[] compares floatToIntBits: bit for bit (bf16 widens exactly)
        assertArrayEquals(want[0], gotOut, when + ": out of the replay vs an ordinary forward");
        assertArrayEquals(want[1], gotAux, when + ": aux of the replay vs an ordinary forward");
    }

    @Test
    void replayEqualsOrdinaryForwardOnNewInput() {
        try (ForwardGraph g = block.captureForward(x, out, aux, ForwardOptions.inference())) {
            assertEquals(block, g.block());
            // the capture ran the forward once
            assertArrayEquals(ordinaryForward(x)[0], out.toFloatArray(), "the capture's own forward");
            float[] before = out.toFloatArray();
            x.copyFrom(BadInputTest.gaussian(B * S * D, 2));
            assertReplayMatches(g, "new input");
            assertFalse(java.util.Arrays.equals(before, out.toFloatArray()), "the replay read the new input");
        }
    }

    @Test
    void setParamBetweenReplaysTakesEffect() {
        try (ForwardGraph g = block.captureForward(x, out, aux, ForwardOptions.inference())) {
            assertReplayMatches(g, "before set");
            float[] before = out.toFloatArray();
            float[] w = block.param("reflex.down");
            for (int i = 0; i < w.length; i++) {
                w[i] = -2f * w[i];
            }
            block.setParam("reflex.down", w);
            assertReplayMatches(g, "after setParam");
            assertFalse(java.util.Arrays.equals(before, out.toFloatArray()), "the replay used the new weight");
        }
    }

    @Test
    void largerForwardInvalidates() {
        ForwardGraph g = block.captureForward(x, out, aux, ForwardOptions.inference());
        // smaller: the scratch is reused, the graph stays valid
        try (Tensor xs = device(1, S / 2, D); Tensor os = device(1, S / 2, D)) {
            xs.copyFrom(BadInputTest.gaussian(S / 2 * D, 3));
            block.forward(xs, os, null, ForwardOptions.inference());
        }
        assertReplayMatches(g, "after a smaller forward");
        try (Tensor xl = device(B, 2 * S, D); Tensor ol = device(B, 2 * S, D)) {
            xl.copyFrom(BadInputTest.gaussian(B * 2 * S * D, 4));
            block.forward(xl, ol, null, ForwardOptions.inference());
        }
        HspmnStateException e = assertThrows(HspmnStateException.class, g::launch);
        assertTrue(e.nativeMessage().contains("the block's scratch moved since capture"), e.getMessage());
        assertTrue(e.nativeMessage().contains("capture again"), e.getMessage());
        g.close();
        try (ForwardGraph again = block.captureForward(x, out, aux, ForwardOptions.inference())) {
            assertReplayMatches(again, "captured again");
        }
    }

    @Test
    void boundObjectsRefuseToCloseWhileTheGraphIsOpen() {
        ForwardGraph g = block.captureForward(x, out, aux, ForwardOptions.inference());
        for (Tensor t : new Tensor[] {x, out, aux}) {
            HspmnStateException e = assertThrows(HspmnStateException.class, t::close);
            assertTrue(e.nativeMessage().contains("destroy the graph(s) first"), e.getMessage());
            assertFalse(t.isClosed(), t + " stays open");
        }
        HspmnStateException eb = assertThrows(HspmnStateException.class, block::close);
        assertTrue(eb.nativeMessage().contains("destroy the graph(s) first"), eb.getMessage());
        assertFalse(block.isClosed());
        assertReplayMatches(g, "after the refused closes");
        g.close();
        g.close(); // idempotent
        assertTrue(g.isClosed());
        assertThrows(IllegalStateException.class, g::launch);
        x.close();
        out.close();
        aux.close();
        block.close();
        assertTrue(x.isClosed() && out.isClosed() && aux.isClosed() && block.isClosed());
    }

    @Test
    void contextCloseClosesOpenGraphsFirst() {
        ForwardGraph g = block.captureForward(x, out, null, ForwardOptions.inference());
        assertEquals(null, g.aux());
        ctx.close();
        assertTrue(g.isClosed() && block.isClosed() && x.isClosed());
        ctx = null;
    }

    @Test
    void thousandLaunchesHoldNoNewMemory() {
        try (ForwardGraph g = block.captureForward(x, out, aux, ForwardOptions.inference())) {
            g.launch();
            ctx.synchronize();
            long start = Hspmn.allocStats().liveBytes();
            for (int i = 0; i < 1_000; i++) {
                g.launch();
            }
            ctx.synchronize();
            assertEquals(start, Hspmn.allocStats().liveBytes(), "library memory after 1000 replays");
            assertReplayMatches(g, "after 1000 replays");
        }
    }

    @Test
    void captureChecksWhatOnlyCudaCanCheck() {
        try (Tensor hostX = Tensor.create(ctx, DType.BF16, B, S, D)) {
            InvalidArgumentException e = assertThrows(InvalidArgumentException.class,
                    () -> block.captureForward(hostX, out, aux, ForwardOptions.inference()));
            assertEquals(Status.MEMORY_KIND, e.status());
            assertTrue(e.nativeMessage().contains("x is HOST memory"), e.getMessage());
        }
        float[] bad = BadInputTest.gaussian(B * S * D, 5);
        bad[17] = Float.NaN;
        x.copyFrom(bad);
        NonFiniteInputException nan = assertThrows(NonFiniteInputException.class,
                () -> block.captureForward(x, out, aux, ForwardOptions.inference()));
        assertTrue(nan.nativeMessage().contains("x contains NaN"), nan.getMessage());
        x.close(); // nothing was bound by the failed captures
        assertTrue(x.isClosed());
        try (Tensor x2 = device(B, S, D); ForwardGraph g = block.captureForward(x2, out, null, ForwardOptions.inference())) {
            assertFalse(g.isClosed(), "the block captures after the refused calls");
        }
    }
}
