package io.hspmn;

import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Tensor.toDLPack read as a DLPack consumer would: the DLTensor fields (DLPack 0.8 layout), shared
 * memory, and the deleter releasing the tensor for close.
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
}
