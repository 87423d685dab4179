package io.hspmn.data;

/**
 * A keyed permutation of [0, n) computed one index at a time: a 6-round Feistel network on the
 * smallest even-bit square domain holding n, with cycle-walking back into [0, n). Nothing is stored,
 * so shuffling a billion windows costs no memory and a position (epoch, index) is the whole state.
 * Each lookup walks fewer than 4 times on average (the domain is under 4n).
 */
final class WindowPermutation {
    private static final int ROUNDS = 6;
    private final long n;
    private final int half;
    private final long mask;
    private final long[] keys = new long[ROUNDS];

    WindowPermutation(long n, long key) {
        if (n < 1) {
            throw new IllegalArgumentException("permutation of " + n + " elements");
        }
        this.n = n;
        int bits = n == 1 ? 2 : 64 - Long.numberOfLeadingZeros(n - 1);
        this.half = Math.max(1, (bits + 1) / 2);
        this.mask = (1L << half) - 1;
        long k = key;
        for (int r = 0; r < ROUNDS; r++) {
            k = SplitMix.mix(k + SplitMix.GOLDEN);
            keys[r] = k;
        }
    }

    long apply(long i) {
        if (i < 0 || i >= n) {
            throw new IndexOutOfBoundsException(i + " not in [0, " + n + ")");
        }
        long x = i;
        do {
            x = encrypt(x);
        } while (x >= n);
        return x;
    }

    private long encrypt(long x) {
        long left = x >>> half;
        long right = x & mask;
        for (int r = 0; r < ROUNDS; r++) {
            long t = left ^ (SplitMix.mix(right ^ keys[r]) & mask);
            left = right;
            right = t;
        }
        return (left << half) | right;
    }
}
