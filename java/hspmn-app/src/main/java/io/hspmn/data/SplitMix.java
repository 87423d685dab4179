package io.hspmn.data;

/** SplitMix64's finaliser: a counter-based generator, so a sampler's random state is just its counters. */
final class SplitMix {
    static final long GOLDEN = 0x9E3779B97F4A7C15L;

    private SplitMix() {
    }

    static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }
}
