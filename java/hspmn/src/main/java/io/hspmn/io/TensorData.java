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
    // The file's element layouts: little-endian, unaligned (a tensor's data need not be aligned).
    static final ValueLayout.OfShort I16_LE = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfInt I32_LE = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfLong I64_LE = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfFloat F32_LE = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfDouble F64_LE = ValueLayout.JAVA_DOUBLE_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

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
        return copyOf(DType.F32, shape, v, F32_LE, v.length);
    }

    public static TensorData f64(long[] shape, double[] v) {
        return copyOf(DType.F64, shape, v, F64_LE, v.length);
    }

    /** BF16 from raw bit patterns (see io.hspmn.BFloat16 for the rounding from float). */
    public static TensorData bf16(long[] shape, short[] bits) {
        return copyOf(DType.BF16, shape, bits, I16_LE, bits.length);
    }

    public static TensorData i32(long[] shape, int[] v) {
        return copyOf(DType.I32, shape, v, I32_LE, v.length);
    }

    public static TensorData i64(long[] shape, long[] v) {
        return copyOf(DType.I64, shape, v, I64_LE, v.length);
    }

    /** count elements of a primitive array, stored as the file stores them (layout: little-endian). */
    private static TensorData copyOf(DType dtype, long[] shape, Object values, ValueLayout layout, int count) {
        MemorySegment s = MemorySegment.ofArray(new byte[Math.multiplyExact(count, dtype.byteSize())]);
        MemorySegment.copy(values, 0, s, layout, 0, count);
        return new TensorData(dtype, shape, s);
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
