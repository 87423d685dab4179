package io.hspmn;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class TensorTest {
    Context ctx;

    @BeforeEach
    void setUp() {
        ctx = Context.create(Backend.CPU);
    }

    @AfterEach
    void tearDown() {
        ctx.close();
    }

    @Test
    void describesItself() {
        try (Tensor t = Tensor.create(ctx, DType.BF16, 2, 3, 5)) {
            assertArrayEquals(new long[] {2, 3, 5}, t.shape());
            t.shape()[0] = 99; // a copy
            assertEquals(2, t.shape(0));
            assertEquals(30, t.numel());
            assertEquals(60, t.byteSize());
            assertEquals(DType.BF16, t.dtype());
            assertEquals(MemoryKind.HOST, t.memory());
            assertArrayEquals(new float[30], t.toFloatArray(), "tensors start zero-filled");
        }
    }

    @Test
    void roundTrips() {
        float[] v = {1f, -2.5f, 3.14159f, 1e-3f, -0f, 65504f};
        try (Tensor f = Tensor.of(ctx, DType.F32, v, 2, 3); Tensor b = Tensor.of(ctx, DType.BF16, v, 6)) {
            assertArrayEquals(v, f.toFloatArray());
            float[] got = b.toFloatArray();
            for (int i = 0; i < v.length; i++) {
                assertEquals(BFloat16.round(v[i]), got[i], "element " + i);
            }
        }
        int[] ints = {3, -1, 7, Integer.MAX_VALUE};
        try (Tensor i = Tensor.ofInts(ctx, ints, 2, 2)) {
            assertArrayEquals(ints, i.toIntArray());
        }
    }

    @Test
    void segmentIsZeroCopy() {
        try (Tensor t = Tensor.create(ctx, DType.F32, 4)) {
            MemorySegment s = t.segment();
            assertEquals(16, s.byteSize());
            s.setAtIndex(ValueLayout.JAVA_FLOAT, 2, 7.5f);
            assertArrayEquals(new float[] {0, 0, 7.5f, 0}, t.toFloatArray());
            t.copyFrom(new float[] {1, 2, 3, 4});
            assertEquals(4f, s.getAtIndex(ValueLayout.JAVA_FLOAT, 3));
            assertTrue(s == t.segment() || s.address() == t.segment().address());
        }
    }

    @Test
    void tensorToTensorAcrossMemoryKinds() {
        float[] v = {1, 2, 3, 4, 5, 6};
        try (Tensor host = Tensor.of(ctx, DType.BF16, v, 2, 3);
             Tensor pinned = Tensor.create(ctx, DType.BF16, MemoryKind.PINNED, 6);
             Tensor f32 = Tensor.create(ctx, DType.F32, 2, 3)) {
            pinned.copyFrom(host);
            assertArrayEquals(v, pinned.toFloatArray());
            assertEquals(6, pinned.segment().byteSize() / 2);
            var e = assertThrows(InvalidArgumentException.class, () -> f32.copyFrom(host));
            assertEquals(Status.DTYPE, e.status());
        }
    }

    @Test
    void countedByTheLibrary() {
        AllocStats before = Hspmn.allocStats();
        try (Tensor t = Tensor.create(ctx, DType.F32, 1000)) {
            AllocStats during = Hspmn.allocStats();
            assertEquals(before.liveTensors() + 1, during.liveTensors());
            assertTrue(during.liveBytes() - before.liveBytes() >= t.byteSize());
        }
        assertEquals(before.liveBytes(), Hspmn.allocStats().liveBytes());
    }

    @Test
    void tooManyElementsForAJavaArrayIsExplained() {
        // a real tensor of 2^31 elements would need 4 GiB; the check runs before anything is allocated
        assertEquals(30, Tensor.javaArrayLength(30, "toFloatArray"));
        var e = assertThrows(IllegalStateException.class, () -> Tensor.javaArrayLength(1L << 31, "toFloatArray"));
        assertTrue(e.getMessage().contains("2147483648 elements"), e.getMessage());
        assertTrue(e.getMessage().contains("segment()"), e.getMessage());
    }
}
