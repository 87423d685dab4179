package io.hspmn;

import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class BFloat16Test {
    @Test
    void roundsToNearestEven() {
        assertEquals((short) 0x3f80, BFloat16.fromFloat(1.0f));
        // exactly half way between 1.0 (0x3f80) and the next value (0x3f81): ties go to the even 0x3f80
        assertEquals((short) 0x3f80, BFloat16.fromFloat(Float.intBitsToFloat(0x3f808000)));
        // half way between 0x3f81 and 0x3f82: to the even 0x3f82
        assertEquals((short) 0x3f82, BFloat16.fromFloat(Float.intBitsToFloat(0x3f818000)));
        // just above half way rounds up
        assertEquals((short) 0x3f81, BFloat16.fromFloat(Float.intBitsToFloat(0x3f808001)));
        assertEquals((short) 0xbf80, BFloat16.fromFloat(-1.0f));
        assertEquals(Float.POSITIVE_INFINITY, BFloat16.toFloat(BFloat16.fromFloat(Float.POSITIVE_INFINITY)));
        // the largest float rounds up to infinity, as IEEE rounding to a narrower format does
        assertEquals(Float.POSITIVE_INFINITY, BFloat16.toFloat(BFloat16.fromFloat(Float.MAX_VALUE)));
    }

    @Test
    void nanStaysNan() {
        // a NaN whose payload sits only in the low bits would round to Inf without the special case
        float nan = Float.intBitsToFloat(0x7f800001);
        assertTrue(Float.isNaN(BFloat16.toFloat(BFloat16.fromFloat(nan))));
        assertTrue(Float.isNaN(BFloat16.toFloat(BFloat16.fromFloat(Float.intBitsToFloat(0xffffffff)))));
        assertTrue(BFloat16.fromFloat(Float.intBitsToFloat(0xff800001)) < 0, "sign of NaN kept");
    }

    @Test
    void everyBf16RoundTrips() {
        for (int b = 0; b < 0x10000; b++) {
            float f = BFloat16.toFloat((short) b);
            if (Float.isNaN(f)) {
                continue;
            }
            assertEquals((short) b, BFloat16.fromFloat(f), Integer.toHexString(b));
        }
    }

    @Test
    void bulkMatchesScalar() {
        float[] v = {0f, -0f, 1.5f, 3.14159f, -2e-20f, 65504f, 1e30f};
        try (Arena a = Arena.ofConfined()) {
            MemorySegment s = a.allocate(2L * v.length + 1).asSlice(1); // unaligned on purpose
            BFloat16.fromFloat(v, s);
            float[] back = new float[v.length];
            BFloat16.toFloat(s, back);
            for (int i = 0; i < v.length; i++) {
                assertEquals(BFloat16.round(v[i]), back[i]);
            }
            assertArrayEquals(back, BFloat16.toFloatArray(s.asSlice(0, 2L * v.length)));
        }
    }
}
