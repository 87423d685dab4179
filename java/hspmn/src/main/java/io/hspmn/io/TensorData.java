package io.hspmn.io;

import io.hspmn.io.SafeTensors.DType;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.Arrays;

/**
 * One tensor's dtype, shape and little-endian bytes, as a safetensors file stores it. The bytes may be
 * any segment (heap, native, a mapping); nothing is copied until it is written.
 */
public record TensorData(DType dtype, long[] shape, MemorySegment bytes) {
    private static final ValueLayout.OfShort I16_LE = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfInt I32_LE = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfLong I64_LE = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfFloat F32_LE = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfDouble F64_LE = ValueLayout.JAVA_DOUBLE_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    public TensorData {
        shape = shape.clone();
        long need = byteSize(dtype, shape);
        if (bytes.byteSize() != need) {
            throw new IllegalArgumentException(dtype + " " + Arrays.toString(shape) + " needs " + need + " bytes, got "
                    + bytes.byteSize());
        }
    }

    /** numel * itemsize, refusing negative dimensions and 64-bit overflow. */
    public static long byteSize(DType dtype, long[] shape) {
        long n = dtype.byteSize();
        for (long d : shape) {
            if (d < 0) {
                throw new IllegalArgumentException("negative dimension in shape " + Arrays.toString(shape));
            }
            try {
                n = Math.multiplyExact(n, d);
            } catch (ArithmeticException e) {
                throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " overflows 64 bits");
            }
        }
        return n;
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }

    public long numel() {
        return bytes.byteSize() / dtype.byteSize();
    }

    public static TensorData f32(long[] shape, float[] v) {
        MemorySegment s = MemorySegment.ofArray(new byte[Math.multiplyExact(v.length, 4)]);
        for (int i = 0; i < v.length; i++) {
            s.set(F32_LE, 4L * i, v[i]);
        }
        return new TensorData(DType.F32, shape, s);
    }

    public static TensorData f64(long[] shape, double[] v) {
        MemorySegment s = MemorySegment.ofArray(new byte[Math.multiplyExact(v.length, 8)]);
        for (int i = 0; i < v.length; i++) {
            s.set(F64_LE, 8L * i, v[i]);
        }
        return new TensorData(DType.F64, shape, s);
    }

    /** BF16 from raw bit patterns (see io.hspmn.BFloat16 for the rounding from float). */
    public static TensorData bf16(long[] shape, short[] bits) {
        MemorySegment s = MemorySegment.ofArray(new byte[Math.multiplyExact(bits.length, 2)]);
        for (int i = 0; i < bits.length; i++) {
            s.set(I16_LE, 2L * i, bits[i]);
        }
        return new TensorData(DType.BF16, shape, s);
    }

    public static TensorData i32(long[] shape, int[] v) {
        MemorySegment s = MemorySegment.ofArray(new byte[Math.multiplyExact(v.length, 4)]);
        for (int i = 0; i < v.length; i++) {
            s.set(I32_LE, 4L * i, v[i]);
        }
        return new TensorData(DType.I32, shape, s);
    }

    public static TensorData i64(long[] shape, long[] v) {
        MemorySegment s = MemorySegment.ofArray(new byte[Math.multiplyExact(v.length, 8)]);
        for (int i = 0; i < v.length; i++) {
            s.set(I64_LE, 8L * i, v[i]);
        }
        return new TensorData(DType.I64, shape, s);
    }

    public static TensorData u8(long[] shape, byte[] v) {
        return new TensorData(DType.U8, shape, MemorySegment.ofArray(v.clone()));
    }

    /** The values widened to double (exact for every dtype but I64 past 2^53). */
    public double get(long i) {
        return switch (dtype) {
            case BF16 -> Float.intBitsToFloat((bytes.get(I16_LE, 2 * i) & 0xffff) << 16);
            case F32 -> bytes.get(F32_LE, 4 * i);
            case F64 -> bytes.get(F64_LE, 8 * i);
            case I32 -> bytes.get(I32_LE, 4 * i);
            case I64 -> bytes.get(I64_LE, 8 * i);
            case U8 -> bytes.get(ValueLayout.JAVA_BYTE, i) & 0xff;
        };
    }

    /** Same dtype, shape and bytes. */
    public boolean contentEquals(TensorData o) {
        return dtype == o.dtype && Arrays.equals(shape, o.shape) && bytes.mismatch(o.bytes) == -1;
    }

    @Override
    public String toString() {
        return dtype + Arrays.toString(shape);
    }
}
