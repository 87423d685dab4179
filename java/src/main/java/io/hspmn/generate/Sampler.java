package io.hspmn.generate;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Picks a token from a row of logits under {@link SamplingParams}. One sampler per sequence: it holds the
 * sequence's random stream and scratch arrays, so sampling allocates nothing. Not thread-safe.
 *
 * <p>Reproducible everywhere: the random stream is SplitMix64 over a counter (draw i uses
 * mix(seed + (i+1) * golden)), and the probabilities come from {@link #expNonPositive}, a polynomial in
 * plain float arithmetic, which Java evaluates bit for bit the same on every JVM (Math.exp may differ by
 * an ulp between platforms). Ties between equal logits go to the lower token id (greedy, the top-k cut,
 * the nucleus).
 *
 * <p>Cost on V = 256 (see jmh DecodeStepBench): greedy is one pass for the maximum and one for its first
 * index; sampling adds one exp per kept token; top-k a linear-time selection; top-p a linear-time
 * weighted selection instead of a sort.
 */
public final class Sampler {
    private static final long GOLDEN = 0x9E3779B97F4A7C15L;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT;
    private static final int BLOCK = 16;

    private final SamplingParams params;
    private final int vocab;
    private final int k;          // effective top-k: 1..vocab
    private final float invTemp;
    private final float[] logits; // the row, bulk-copied from off-heap memory
    private final float[] probs;  // unnormalised, by token id
    private final float[] blockSums;
    private final long[] keys;    // candidates as (order-preserving logit bits, complemented id)
    private long draws;

    public Sampler(SamplingParams params, int vocabSize) {
        if (vocabSize < 1) {
            throw new IllegalArgumentException("vocabulary size must be >= 1, got " + vocabSize);
        }
        this.params = params;
        this.vocab = vocabSize;
        this.k = params.topK() == 0 ? vocabSize : Math.min(params.topK(), vocabSize);
        this.invTemp = params.isGreedy() ? 0f : 1f / params.temperature();
        this.logits = new float[vocabSize];
        this.probs = params.isGreedy() ? null : new float[vocabSize];
        this.blockSums = new float[(vocabSize + BLOCK - 1) / BLOCK];
        boolean cut = !params.isGreedy() && (k < vocabSize || params.topP() < 1f);
        this.keys = cut ? new long[vocabSize] : null;
    }

    public SamplingParams params() {
        return params;
    }

    /** Random numbers drawn so far (the stream's position). */
    public long draws() {
        return draws;
    }

    /**
     * A token for the logits row at {@code offset} (bytes) in {@code row}: V f32 values.
     *
     * @throws IllegalStateException when the row holds NaN or +Infinity, or is all -Infinity (a model fault, not a choice to make here)
     */
    public int sample(MemorySegment row, long offset) {
        MemorySegment.copy(row, F32, offset, logits, 0, vocab);
        float max = max(logits, vocab);
        if (Float.isInfinite(max)) {
            throw new IllegalStateException(max > 0 ? "the logits hold +Infinity" : "every logit is -Infinity");
        }
        if (params.isGreedy()) {
            return firstIndexOf(logits, vocab, max);
        }
        if (keys == null) {
            return sampleAll(max);
        }
        int n = vocab;
        int first = 0;
        for (int i = 0; i < vocab; i++) {
            keys[i] = key(logits[i], i);
        }
        if (k < vocab) {
            selectLargest(keys, vocab, k); // the k candidates now sit in keys[vocab-k .. vocab)
            first = vocab - k;
            n = k;
        }
        for (int j = first; j < first + n; j++) {
            int id = idOf(keys[j]);
            probs[id] = expNonPositive((logits[id] - max) * invTemp);
        }
        if (params.topP() < 1f) {
            n = nucleus(first, n);
        }
        float total = 0;
        for (int j = first; j < first + n; j++) {
            total += probs[idOf(keys[j])];
        }
        float u = (float) (nextDouble() * total);
        float acc = 0;
        int last = idOf(keys[first]);
        for (int j = first; j < first + n; j++) {
            int id = idOf(keys[j]);
            if (probs[id] > 0) {
                acc += probs[id];
                last = id;
                if (u < acc) {
                    return id;
                }
            }
        }
        return last; // rounding put u at the very top of the range
    }

    /** Softmax over every token, then one draw, located block by block. */
    private int sampleAll(float max) {
        float t = invTemp;
        for (int i = 0; i < vocab; i++) {
            probs[i] = expNonPositive((logits[i] - max) * t);
        }
        float total = 0;
        int nb = blockSums.length;
        for (int b = 0; b < nb; b++) {
            int lo = b * BLOCK;
            int hi = Math.min(vocab, lo + BLOCK);
            float s = 0;
            for (int i = lo; i < hi; i++) {
                s += probs[i];
            }
            blockSums[b] = s;
            total += s;
        }
        float u = (float) (nextDouble() * total);
        float acc = 0;
        for (int b = 0; b < nb; b++) {
            float next = acc + blockSums[b];
            if (u < next || b == nb - 1) {
                int lo = b * BLOCK;
                int hi = Math.min(vocab, lo + BLOCK);
                int last = -1;
                for (int i = lo; i < hi; i++) {
                    if (probs[i] > 0) {
                        acc += probs[i];
                        last = i;
                        if (u < acc) {
                            return i;
                        }
                    }
                }
                if (last >= 0) {
                    return last; // rounding: the block's sum and the running sum differ in the last bit
                }
                break;
            }
            acc = next;
        }
        for (int i = vocab - 1; i >= 0; i--) {
            if (probs[i] > 0) {
                return i;
            }
        }
        throw new IllegalStateException("no token has positive probability");
    }

    /**
     * Reorders keys[first .. first+n) so that its first m entries are the most likely tokens whose
     * probability reaches top_p of the candidates' total, with m as small as possible; returns m. A
     * weighted quickselect: linear time, where sorting the candidates would be n log n.
     */
    private int nucleus(int first, int n) {
        float total = 0;
        for (int j = first; j < first + n; j++) {
            total += probs[idOf(keys[j])];
        }
        float need = params.topP() * total;
        int lo = first;
        int hi = first + n;
        while (true) {
            if (hi - lo <= BLOCK) {
                // sort what is left, most likely first, and take until the mass is reached
                for (int i = lo + 1; i < hi; i++) {
                    long v = keys[i];
                    int j = i - 1;
                    while (j >= lo && keys[j] < v) {
                        keys[j + 1] = keys[j];
                        j--;
                    }
                    keys[j + 1] = v;
                }
                for (int i = lo; i < hi; i++) {
                    need -= probs[idOf(keys[i])];
                    if (need <= 0) {
                        return i + 1 - first;
                    }
                }
                return hi - first;
            }
            int mid = lo + (hi - lo) / 2;
            long pivot = keys[mid];
            keys[mid] = keys[hi - 1];
            keys[hi - 1] = pivot;
            int j = lo;
            float upper = 0;
            for (int i = lo; i < hi - 1; i++) {
                long v = keys[i];
                if (v > pivot) {
                    keys[i] = keys[j];
                    keys[j++] = v;
                    upper += probs[idOf(v)];
                }
            }
            keys[hi - 1] = keys[j];
            keys[j] = pivot;
            if (upper >= need) {
                hi = j;
            } else {
                need -= upper + probs[idOf(pivot)];
                if (need <= 0) {
                    return j + 1 - first;
                }
                lo = j + 1;
            }
        }
    }

    private long key(float v, int id) {
        int bits = Float.floatToRawIntBits(v);
        bits ^= (bits >> 31) & 0x7fffffff; // negative floats: reverse their order
        return ((long) bits << 32) | (vocab - 1 - id);
    }

    private int idOf(long key) {
        return vocab - 1 - (int) key;
    }

    /** The largest value, block maxima left in blockSums (greedy finds its block from them); NaN is refused. */
    private float max(float[] a, int n) {
        float m = Float.NEGATIVE_INFINITY;
        int nb = blockSums.length;
        for (int b = 0; b < nb; b++) {
            int lo = b * BLOCK;
            int hi = Math.min(n, lo + BLOCK);
            float bm = Float.NEGATIVE_INFINITY;
            for (int i = lo; i < hi; i++) {
                bm = Math.max(bm, a[i]); // Math.max propagates NaN
            }
            blockSums[b] = bm;
            m = Math.max(m, bm);
        }
        if (m != m) {
            throw new IllegalStateException("the logits hold NaN");
        }
        return m;
    }

    /** The first index holding v, the maximum: its block from the block maxima, then a scan of 16. */
    private int firstIndexOf(float[] a, int n, float v) {
        for (int b = 0; b < blockSums.length; b++) {
            if (blockSums[b] == v) {
                for (int i = b * BLOCK; i < n; i++) {
                    if (a[i] == v) {
                        return i;
                    }
                }
            }
        }
        throw new IllegalStateException("unreachable: the maximum is in the row");
    }

    /** Partially orders a[0..n) so that the k largest values occupy a[n-k..n) (quickselect). */
    static void selectLargest(long[] a, int n, int k) {
        int target = n - k; // final position of the smallest kept value
        int lo = 0;
        int hi = n - 1;
        while (lo < hi) {
            long pivot = a[(lo + hi) >>> 1];
            int i = lo;
            int j = hi;
            while (i <= j) {
                while (a[i] < pivot) {
                    i++;
                }
                while (a[j] > pivot) {
                    j--;
                }
                if (i <= j) {
                    long t = a[i];
                    a[i] = a[j];
                    a[j] = t;
                    i++;
                    j--;
                }
            }
            if (target <= j) {
                hi = j;
            } else if (target >= i) {
                lo = i;
            } else {
                return;
            }
        }
    }

    /**
     * e^x for x <= 0, relative error below 3e-7 (float precision), 0 below e^-87.33, NaN for NaN. x = n ln2 + f
     * with n an integer and |f| <= ln2/2 (Cody-Waite: ln2 in two parts, so f stays exact), then e^f by a
     * degree-6 polynomial and 2^n from n's bits, which the 1.5 * 2^23 rounding trick leaves in the low
     * bits of t. Plain float arithmetic only, so every JVM gives the same bits; about 2.5 ns per value here
     * (Math.exp: 4.5).
     */
    static float expNonPositive(float x) {
        float c = x < -87.33f ? -87.33f : x; // NaN passes (the comparison is false) and comes out NaN
        float t = c * 1.44269504f + 12582912f;
        float n = t - 12582912f;
        float f = (c - n * 0.693145752f) - n * 1.42860682e-6f;
        float p = 1f + f * (1f + f * (0.5f + f * (0.166666667f + f * (0.0416666667f + f * (0.00833333333f
                + f * 0.00138888889f)))));
        float e = p * Float.intBitsToFloat((Float.floatToRawIntBits(t) - 0x4B400000 + 127) << 23);
        return x < -87.33f ? 0f : e;
    }

    /** In [0, 1), 53 random bits. */
    private double nextDouble() {
        long z = params.seed() + (++draws) * GOLDEN;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        z ^= z >>> 31;
        return (z >>> 11) * 0x1.0p-53;
    }

    /** The id of the largest of V logits at {@code offset}, the lowest id among ties; NaN is refused. */
    public static int argmax(MemorySegment row, long offset, int vocab) {
        int best = 0;
        float bestV = Float.NEGATIVE_INFINITY;
        boolean nan = false;
        for (int i = 0; i < vocab; i++) {
            float v = row.get(F32, offset + 4L * i);
            if (v > bestV) {
                bestV = v;
                best = i;
            }
            nan |= v != v;
        }
        if (nan) {
            throw new IllegalStateException("the logits hold NaN");
        }
        return best;
    }

    /** log softmax(row)[id]: the model's own log-probability of {@code id} (temperature 1, nothing cut). */
    public static double logProb(MemorySegment row, long offset, int vocab, int id) {
        float max = Float.NEGATIVE_INFINITY;
        for (int i = 0; i < vocab; i++) {
            max = Math.max(max, row.get(F32, offset + 4L * i));
        }
        double sum = 0;
        for (int i = 0; i < vocab; i++) {
            sum += Math.exp(row.get(F32, offset + 4L * i) - max);
        }
        return row.get(F32, offset + 4L * id) - max - Math.log(sum);
    }
}
