package io.hspmn.bench;

import io.hspmn.Context;
import io.hspmn.DType;
import io.hspmn.MemoryKind;
import io.hspmn.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Benchmark input data: the same bf16 pattern as native hspmn_bench (splitmix64 words, each giving
 * four 16-bit uniforms whose centred sum, at unit variance, is rounded to bf16), tiled over the
 * tensor. The period is prime so rows of D values never repeat (repeated tokens would tie the
 * router's scores), and no value is zero (zeros would flatter the timing).
 */
final class BenchInput {
    static final int PERIOD = 1_048_573;

    private BenchInput() {
    }

    static short[] pattern(long seed) {
        short[] p = new short[PERIOD];
        long state = seed;
        for (int i = 0; i < PERIOD; i++) {
            state += 0x9E3779B97F4A7C15L;
            long z = state;
            z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
            z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
            z ^= z >>> 31;
            float sum = 0f;
            for (int k = 0; k < 4; k++) {
                sum += ((float) ((z >>> (16 * k)) & 0xFFFF) + 0.5f) / 65536.0f;
            }
            float f = (sum - 2.0f) * 1.7320508f;
            int u = Float.floatToRawIntBits(f);
            short b = (short) ((u + 0x7FFF + ((u >>> 16) & 1)) >>> 16);
            p[i] = (b & 0x7FFF) == 0 ? (short) 0x3F80 : b;
        }
        return p;
    }

    /**
     * A bf16 tensor of {@code shape} in {@code memory}, holding the tiled pattern. Device tensors are
     * filled through a host tensor that is closed before this returns.
     */
    static Tensor filled(Context ctx, MemoryKind memory, short[] pattern, long... shape) {
        Tensor t = Tensor.create(ctx, DType.BF16, memory, shape);
        try {
            if (memory == MemoryKind.DEVICE) {
                try (Tensor host = Tensor.create(ctx, DType.BF16, MemoryKind.HOST, shape)) {
                    tile(host.segment(), pattern);
                    t.copyFrom(host);
                }
            } else {
                tile(t.segment(), pattern);
            }
            return t;
        } catch (RuntimeException e) {
            t.close();
            throw e;
        }
    }

    private static void tile(MemorySegment dst, short[] pattern) {
        long n = dst.byteSize() / 2;
        for (long i = 0; i < n; i += pattern.length) {
            int len = (int) Math.min(pattern.length, n - i);
            MemorySegment.copy(pattern, 0, dst, ValueLayout.JAVA_SHORT, i * 2, len);
        }
    }
}
