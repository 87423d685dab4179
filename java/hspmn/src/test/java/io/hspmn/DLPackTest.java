package io.hspmn;

import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Tensor.toDLPack read as a DLPack consumer would: the DLTensor fields (DLPack 0.8 layout), shared
 * memory, and the deleter releasing the tensor for close. Tensor.fromDLPack fed DLManagedTensors built by
 * hand in off-heap memory with an upcall deleter: zero copy, a forward in place, the deleter exactly once
 * (close or Context.close), bad inputs refused with ownership left with the caller, and a round trip
 * through toDLPack.
 */
class DLPackTest {
    // DLManagedTensor: DLTensor {data 0, device {type 8, id 12}, ndim 16, dtype {code 20, bits 21, lanes 22},
    // shape 24, strides 32, byte_offset 40}, manager_ctx 48, deleter 56
    @Test
    void exportDescribesTheTensorAndSharesItsMemory() throws Throwable {
        try (Context ctx = Context.create(Backend.CPU)) {
            Tensor t = Tensor.of(ctx, DType.F32, new float[] {1, 2, 3, 4, 5, 6}, 2, 3);
            MemorySegment m = t.toDLPack().reinterpret(64);
            assertEquals(t.segment().address(), m.get(ValueLayout.ADDRESS, 0).address(), "data");
            assertEquals(1, m.get(ValueLayout.JAVA_INT, 8), "device type kDLCPU");
            assertEquals(2, m.get(ValueLayout.JAVA_INT, 16), "ndim");
            assertEquals(2, m.get(ValueLayout.JAVA_BYTE, 20), "dtype code kDLFloat");
            assertEquals(32, m.get(ValueLayout.JAVA_BYTE, 21), "bits");
            assertEquals(1, m.get(ValueLayout.JAVA_SHORT, 22), "lanes");
            MemorySegment shape = m.get(ValueLayout.ADDRESS, 24).reinterpret(16);
            assertEquals(2, shape.get(ValueLayout.JAVA_LONG, 0));
            assertEquals(3, shape.get(ValueLayout.JAVA_LONG, 8));
            assertEquals(0, m.get(ValueLayout.ADDRESS, 32).address(), "strides NULL: compact row-major");
            // a consumer writing through the export changes the tensor
            MemorySegment data = m.get(ValueLayout.ADDRESS, 0).reinterpret(24);
            data.setAtIndex(ValueLayout.JAVA_FLOAT, 4, 50f);
            assertEquals(50f, t.toFloatArray()[4]);

            HspmnStateException held = assertThrows(HspmnStateException.class, t::close);
            assertTrue(held.getMessage().contains("DLPack"), held.getMessage());
            MethodHandle deleter = Linker.nativeLinker().downcallHandle(m.get(ValueLayout.ADDRESS, 56),
                    FunctionDescriptor.ofVoid(ValueLayout.ADDRESS));
            deleter.invokeExact(m);
            t.close();
            assertTrue(t.isClosed());
        }
    }

    @Test
    void bf16AndI32CarryTheirTypeCodes() throws Throwable {
        try (Context ctx = Context.create(Backend.CPU); Arena arena = Arena.ofConfined()) {
            for (DType d : new DType[] {DType.BF16, DType.I32}) {
                try (Tensor t = Tensor.create(ctx, d, MemoryKind.HOST, 4)) {
                    MemorySegment m = t.toDLPack().reinterpret(64);
                    assertEquals(d == DType.BF16 ? 4 : 0, m.get(ValueLayout.JAVA_BYTE, 20), d + " code");
                    assertEquals(d == DType.BF16 ? 16 : 32, m.get(ValueLayout.JAVA_BYTE, 21), d + " bits");
                    MethodHandle deleter = Linker.nativeLinker().downcallHandle(m.get(ValueLayout.ADDRESS, 56),
                            FunctionDescriptor.ofVoid(ValueLayout.ADDRESS));
                    deleter.invokeExact(m);
                }
            }
        }
    }

    // ---- import ----

    /** Deleter calls per managed tensor address (the upcall's only state). */
    private static final Map<Long, AtomicInteger> DELETED = new ConcurrentHashMap<>();

    static void deleted(MemorySegment self) {
        DELETED.computeIfAbsent(self.address(), k -> new AtomicInteger()).incrementAndGet();
    }

    private static int deletions(MemorySegment managed) {
        AtomicInteger n = DELETED.get(managed.address());
        return n == null ? 0 : n.get();
    }

    private static MemorySegment deleterStub(Arena arena) throws ReflectiveOperationException {
        MethodHandle target = MethodHandles.lookup().findStatic(DLPackTest.class, "deleted",
                MethodType.methodType(void.class, MemorySegment.class));
        return Linker.nativeLinker().upcallStub(target, FunctionDescriptor.ofVoid(ValueLayout.ADDRESS), arena);
    }

    /**
     * A DLManagedTensor (DLPack 0.8 layout, as in the export test above) over {@code data}, kDLCPU, with the
     * counting deleter; strides NULL unless given.
     */
    private static MemorySegment managed(Arena arena, MemorySegment data, int code, int bits, long[] shape,
                                         long[] strides, long byteOffset, MemorySegment deleter) {
        MemorySegment m = arena.allocate(64, 8);
        m.set(ValueLayout.ADDRESS, 0, data);
        m.set(ValueLayout.JAVA_INT, 8, 1); // kDLCPU
        m.set(ValueLayout.JAVA_INT, 12, 0);
        m.set(ValueLayout.JAVA_INT, 16, shape.length);
        m.set(ValueLayout.JAVA_BYTE, 20, (byte) code);
        m.set(ValueLayout.JAVA_BYTE, 21, (byte) bits);
        m.set(ValueLayout.JAVA_SHORT, 22, (short) 1);
        m.set(ValueLayout.ADDRESS, 24, arena.allocateFrom(ValueLayout.JAVA_LONG, shape));
        m.set(ValueLayout.ADDRESS, 32, strides == null ? MemorySegment.NULL
                : arena.allocateFrom(ValueLayout.JAVA_LONG, strides));
        m.set(ValueLayout.JAVA_LONG, 40, byteOffset);
        m.set(ValueLayout.ADDRESS, 48, MemorySegment.NULL);
        m.set(ValueLayout.ADDRESS, 56, deleter);
        return m;
    }

    @Test
    void importSharesTheProducersMemoryAndDeletesItOnce() throws Throwable {
        HspmnConfig cfg = HspmnConfig.builder().dim(32).numHeads(2).numKvHeads(1).mlpRatio(2).sparsityK(0.25f).build();
        long[] shape = {2, 9, 32};
        int n = 2 * 9 * 32;
        float[] xs = BadInputTest.gaussian(n, 5);
        try (Arena arena = Arena.ofConfined(); Context ctx = Context.create(Backend.CPU)) {
            MemorySegment del = deleterStub(arena);
            MemorySegment xData = arena.allocate(2L * n, 64);
            BFloat16.fromFloat(xs, xData);
            MemorySegment outData = arena.allocate(2L * n, 64);
            MemorySegment xm = managed(arena, xData, 4, 16, shape, null, 0, del);            // kDLBfloat 16
            MemorySegment outm = managed(arena, outData, 4, 16, shape, new long[] {288, 32, 1}, 0, del);

            Tensor x = Tensor.fromDLPack(ctx, xm);
            Tensor out = Tensor.fromDLPack(ctx, outm);
            assertEquals(DType.BF16, x.dtype());
            assertEquals(MemoryKind.HOST, x.memory());
            assertArrayEquals(shape, x.shape());
            assertEquals(xData.address(), x.segment().address(), "x is the producer's memory, not a copy");
            assertEquals(outData.address(), out.segment().address(), "out is the producer's memory, not a copy");

            Block block = Block.create(ctx, cfg, 3);
            block.forward(x, out, ForwardOptions.inference());
            Tensor xCopy = Tensor.of(ctx, DType.BF16, xs, shape);
            Tensor outCopy = Tensor.create(ctx, DType.BF16, shape);
            block.forward(xCopy, outCopy, ForwardOptions.inference());
            float[] inPlace = new float[n];
            BFloat16.toFloat(outData, inPlace);
            assertArrayEquals(outCopy.toFloatArray(), inPlace, "the forward wrote the producer's memory");

            assertEquals(0, deletions(xm));
            x.close();
            assertEquals(1, deletions(xm), "close runs the producer's deleter");
            x.close();
            assertEquals(1, deletions(xm), "a second close is a no-op");
            assertEquals(0, deletions(outm));
            ctx.close(); // closes out, the block and the copies: out's deleter runs once
            assertEquals(1, deletions(outm), "Context.close runs the deleter of a tensor it closes");
        }
    }

    @Test
    void badImportsAreTypedErrorsAndLeaveOwnershipWithTheCaller() throws Throwable {
        try (Arena arena = Arena.ofConfined(); Context ctx = Context.create(Backend.CPU)) {
            MemorySegment del = deleterStub(arena);
            MemorySegment data = arena.allocate(64, 64);
            record Case(String name, MemorySegment managed, Status status, String fragment) {
            }
            Case[] cases = {
                new Case("f64", managed(arena, data, 2, 64, new long[] {2, 4}, null, 0, del), Status.DTYPE, "dtype"),
                new Case("strided", managed(arena, data, 2, 32, new long[] {2, 4}, new long[] {1, 2}, 0, del),
                        Status.SHAPE, "compact row-major"),
                new Case("misaligned", managed(arena, data, 2, 32, new long[] {3}, null, 4, del),
                        Status.INVALID_ARGUMENT, "16-byte aligned"),
                new Case("ndim 5", managed(arena, data, 2, 32, new long[] {1, 1, 1, 2, 4}, null, 0, del),
                        Status.SHAPE, "ndim"),
            };
            MemorySegment cuda = managed(arena, data, 2, 32, new long[] {2, 4}, null, 0, del);
            cuda.set(ValueLayout.JAVA_INT, 8, 2); // kDLCUDA on a CPU context
            Case[] all = java.util.Arrays.copyOf(cases, cases.length + 1);
            all[cases.length] = new Case("kDLCUDA", cuda, Status.MEMORY_KIND, "CPU context");
            for (Case c : all) {
                InvalidArgumentException e = assertThrows(InvalidArgumentException.class,
                        () -> Tensor.fromDLPack(ctx, c.managed()), c.name());
                assertEquals(c.status(), e.status(), c.name() + ": " + e.getMessage());
                assertTrue(e.getMessage().contains(c.fragment()), c.name() + ": " + e.getMessage());
                assertEquals(0, deletions(c.managed()), c.name() + ": the deleter of a refused tensor ran");
            }
            assertThrows(InvalidArgumentException.class, () -> Tensor.fromDLPack(ctx, MemorySegment.NULL));
            // still the caller's: fixed up, the same managed tensor imports and is deleted once
            MemorySegment m = cases[1].managed();
            m.set(ValueLayout.ADDRESS, 32, MemorySegment.NULL);
            try (Tensor t = Tensor.fromDLPack(ctx, m)) {
                assertEquals(DType.F32, t.dtype());
            }
            assertEquals(1, deletions(m));
        }
    }

    @Test
    void aReimportedExportHoldsItsSourceAndNothingIsFreedTwice() {
        try (Context ctx = Context.create(Backend.CPU)) {
            Tensor t = Tensor.of(ctx, DType.F32, new float[] {1, 2, 3, 4}, 4);
            Tensor back = Tensor.fromDLPack(ctx, t.toDLPack());
            assertEquals(t.segment().address(), back.segment().address(), "same memory");
            assertArrayEquals(new float[] {1, 2, 3, 4}, back.toFloatArray());
            // an export of the import: the import cannot go while it lives, nor the source under the import
            MemorySegment again = back.toDLPack();
            assertThrows(HspmnStateException.class, t::close);
            assertThrows(HspmnStateException.class, back::close);
            MemorySegment m = again.reinterpret(64);
            Tensor third = Tensor.fromDLPack(ctx, m);
            assertThrows(HspmnStateException.class, back::close);
            third.close();  // runs back's export deleter
            back.close();   // runs t's export deleter
            assertTrue(back.isClosed());
            t.close();
            assertTrue(t.isClosed());
        }
    }

    @Test
    void aCudaStreamNeedsTheCudaBackend() {
        assertThrows(IllegalArgumentException.class,
                () -> ContextOptions.defaults().withBackend(Backend.CPU).withCudaStream(ContextOptions.CUDA_STREAM_LEGACY));
        assertEquals(0L, ContextOptions.defaults().cudaStream(), "the library's own stream by default");
        Status noCuda = null;
        if (!Hspmn.backendBuilt(Backend.CUDA)) {
            noCuda = Status.NOT_BUILT;
        } else {
            try (Context probe = Context.create(Backend.CUDA)) {
                // a device answers: the stream path is ci/gpu.sh's (test_dlpack.py --backend cuda)
            } catch (BackendUnavailableException e) {
                noCuda = Status.NO_DEVICE;
            }
        }
        if (noCuda != null) { // AUTO with a stream must not fall back to the CPU
            BackendUnavailableException e = assertThrows(BackendUnavailableException.class,
                    () -> Context.create(ContextOptions.defaults().withCudaStream(ContextOptions.CUDA_STREAM_LEGACY)));
            assertEquals(noCuda, e.status(), e.getMessage());
        }
    }
}
