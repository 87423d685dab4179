package io.hspmn.data;

import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;

import static org.junit.jupiter.api.Assertions.assertEquals;

class Utf8CheckTest {
    private static Utf8Check.Result scan(byte... b) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment s = a.allocate(Math.max(1, b.length)).asSlice(0, b.length);
            s.copyFrom(MemorySegment.ofArray(b));
            return Utf8Check.scan(s);
        }
    }

    private static byte[] bytes(int... v) {
        byte[] b = new byte[v.length];
        for (int i = 0; i < v.length; i++) {
            b[i] = (byte) v[i];
        }
        return b;
    }

    @Test
    void wellFormedTextHasNoErrors() {
        byte[] text = "ASCII, é, €, 𝄞 (a 4-byte one), and U+10FFFF \uDBFF\uDFFF".getBytes(StandardCharsets.UTF_8);
        assertEquals(new Utf8Check.Result(-1, 0, -1), scan(text));
        assertEquals(new Utf8Check.Result(-1, 0, -1), scan());
    }

    @Test
    void findsTheFirstNul() {
        assertEquals(3, scan(bytes('a', 'b', 'c', 0, 'd', 0)).nulAt());
    }

    @Test
    void countsEachIllFormedSequence() {
        // offsets:              0    1     2    3     4     5    6     7     8     9    10
        Utf8Check.Result r = scan(bytes('a', 0xC0, 0xAF, 'b', 0xE0, 0x80, 0x80, 'c', 0xED, 0xA0, 0x80));
        // C0 AF overlong (2 bytes), E0 80 80 overlong (3), ED A0 80 a surrogate (3): every byte counts once
        assertEquals(8, r.invalid());
        assertEquals(1, r.firstInvalid());
        assertEquals(-1, r.nulAt());
    }

    @Test
    void refusesPastU10FFFFAndLoneContinuationsAndTruncation() {
        assertEquals(4, scan(bytes(0xF4, 0x90, 0x80, 0x80)).invalid()); // U+110000
        assertEquals(1, scan(bytes(0xF5)).invalid());
        assertEquals(1, scan(bytes('x', 0x80)).invalid());
        assertEquals(2, scan(bytes('x', 0xE2, 0x82)).invalid()); // € cut after two of its three bytes
        assertEquals(1, scan(bytes('x', 0xE2, 0x82)).firstInvalid());
        assertEquals(0, scan(bytes(0xE2, 0x82, 0xAC)).invalid()); // the whole €
    }

    @Test
    void toleranceIsOnePerThousandWithAFloorOfFour() {
        assertEquals(4, Utf8Check.tolerated(10));
        assertEquals(4, Utf8Check.tolerated(4999));
        assertEquals(5, Utf8Check.tolerated(5000));
        assertEquals(1000, Utf8Check.tolerated(1_000_000));
    }
}
