package io.hspmn;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/** bfloat16 conversions: the upper 16 bits of an IEEE float32, rounded to nearest even. */
public final class BFloat16 {
    /** Little-endian and unaligned, so it also reads slices of a safetensors file at any offset. */
    static final ValueLayout.OfShort LAYOUT = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private BFloat16() {
    }

    /** Round to nearest even; NaN stays NaN (quieted, sign kept), infinities stay infinite. */
    public static short fromFloat(float f) {
        int bits = Float.floatToRawIntBits(f);
        if ((bits & 0x7fffffff) > 0x7f800000) {
            // Rounding could carry a NaN's payload into the exponent and make it Inf; force a quiet NaN.
            return (short) ((bits >>> 16) | 0x0040);
        }
        int rounding = 0x7fff + ((bits >>> 16) & 1);
        return (short) ((bits + rounding) >>> 16);
    }

    public static float toFloat(short bf16) {
        return Float.intBitsToFloat((bf16 & 0xffff) << 16);
    }

    /** Reads {@code dst.length} bf16 values from {@code src} starting at byte 0. */
    public static void toFloat(MemorySegment src, float[] dst) {
        if (src.byteSize() < 2L * dst.length) {
            throw new IndexOutOfBoundsException("segment holds " + src.byteSize() / 2 + " bf16 values, need " + dst.length);
        }
        for (int i = 0; i < dst.length; i++) {
            dst[i] = toFloat(src.get(LAYOUT, 2L * i));
        }
    }

    public static float[] toFloatArray(MemorySegment src) {
        float[] out = new float[Math.toIntExact(src.byteSize() / 2)];
        toFloat(src, out);
        return out;
    }

    /** Writes {@code src} as bf16 into {@code dst} starting at byte 0. */
    public static void fromFloat(float[] src, MemorySegment dst) {
        if (dst.byteSize() < 2L * src.length) {
            throw new IndexOutOfBoundsException("segment holds " + dst.byteSize() / 2 + " bf16 values, need " + src.length);
        }
        for (int i = 0; i < src.length; i++) {
            dst.set(LAYOUT, 2L * i, fromFloat(src[i]));
        }
    }

    /** {@code x} rounded to bf16 and back: the value a bf16 tensor holds after storing x. */
    public static float round(float x) {
        return toFloat(fromFloat(x));
    }
}
