package io.hspmn.data;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Tells text from binary. A NUL byte anywhere means binary: no text file has one, and nearly every
 * binary format does. Invalid UTF-8 (RFC 3629: no overlongs, surrogates or code points past
 * U+10FFFF) is tolerated up to {@link #tolerated(long)} sequences, so a text file with a stray
 * Latin-1 byte or a character cut at the end still trains (the model is byte-level and sees the bytes
 * as they are), while a Latin-1 or binary file is refused.
 */
final class Utf8Check {
    /** The verdict: {@code nulAt} is -1 without a NUL; {@code firstInvalid} is -1 without invalid bytes. */
    record Result(long nulAt, long invalid, long firstInvalid) {
    }

    private Utf8Check() {
    }

    /** Invalid sequences allowed in a file of {@code size} bytes: 1 per 1,000 bytes, and at least 4. */
    static long tolerated(long size) {
        return Math.max(4, size / 1000);
    }

    static Result scan(MemorySegment s) {
        long n = s.byteSize();
        long invalid = 0;
        long firstInvalid = -1;
        long i = 0;
        while (i < n) {
            int b = s.get(ValueLayout.JAVA_BYTE, i) & 0xFF;
            if (b < 0x80) {
                if (b == 0) {
                    return new Result(i, invalid, firstInvalid);
                }
                i++;
                continue;
            }
            int len = sequenceLength(s, i, n, b);
            if (len > 0) {
                i += len;
            } else {
                // One error per maximal ill-formed prefix is what decoders replace with U+FFFD; one byte is close enough to count.
                if (firstInvalid < 0) {
                    firstInvalid = i;
                }
                invalid++;
                i++;
            }
        }
        return new Result(-1, invalid, firstInvalid);
    }

    /** Length of the well-formed sequence starting with lead byte {@code b} at {@code i}, or 0 if there is none. */
    private static int sequenceLength(MemorySegment s, long i, long n, int b) {
        int len;
        int lo = 0x80;
        int hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF) {
            len = 2;
        } else if (b >= 0xE0 && b <= 0xEF) {
            len = 3;
            if (b == 0xE0) {
                lo = 0xA0; // overlong below U+0800
            } else if (b == 0xED) {
                hi = 0x9F; // UTF-16 surrogates
            }
        } else if (b >= 0xF0 && b <= 0xF4) {
            len = 4;
            if (b == 0xF0) {
                lo = 0x90; // overlong below U+10000
            } else if (b == 0xF4) {
                hi = 0x8F; // past U+10FFFF
            }
        } else {
            return 0; // continuation byte without a lead, C0/C1 overlongs, F5..FF
        }
        if (i + len > n) {
            return 0;
        }
        int c1 = s.get(ValueLayout.JAVA_BYTE, i + 1) & 0xFF;
        if (c1 < lo || c1 > hi) {
            return 0;
        }
        for (int k = 2; k < len; k++) {
            int c = s.get(ValueLayout.JAVA_BYTE, i + k) & 0xFF;
            if (c < 0x80 || c > 0xBF) {
                return 0;
            }
        }
        return len;
    }
}
