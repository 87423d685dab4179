package io.hspmn.generate;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

/**
 * Picks a token from a row of logits under {@link SamplingParams}. One sampler per sequence: it holds the
 * sequence's random stream and scratch arrays, so sampling allocates nothing. Not thread-safe.
 *
 * <p>The definition (native/README.md "Sampling"), shared bit for bit with the native {@code sample_tokens}
 * op on the CPU and CUDA backends ({@link io.hspmn.Hspmn#sample}):
 * <ol>
 *   <li>A row holding NaN or +Infinity, or only -Infinity, is refused (a model fault, not a choice to make
 *       here); -Infinity entries are masked tokens. Greedy (temperature 0) is the lowest id holding the
 *       maximum m.</li>
 *   <li>Each token's mass is the integer {@code floor(2^46 * expNonPositive((l - m) * (1f / T)))}: float
 *       arithmetic step by step (no fused multiply-add), then exact integers. Masses of at most 2^46 for at
 *       most 2^16 tokens keep every sum below 2^62, so sums are exact in any order: the GPU's parallel
 *       reductions and these loops agree.</li>
 *   <li>Tokens are ordered by key: the larger logit first (-0 equals +0), then the lower id. top-k keeps the
 *       first k keys; top-p then keeps the shortest key prefix of those whose mass reaches
 *       {@code min(M, ceil(p * M))} (p * M in double), M being the mass top-k kept.</li>
 *   <li>Draw i of the stream (i = 1, 2, ...; {@link #draws()}) takes z = SplitMix64's mix of
 *       {@code seed + i * 0x9E3779B97F4A7C15}, the point {@code t = floor(z * S / 2^64)} of the kept mass S,
 *       and returns the first id (in id order) whose running kept mass exceeds t.</li>
 * </ol>
 * So token i is drawn with probability mass_i / S: the softmax of logits / T over the kept set to float32
 * precision (the polynomial's 3e-7, the rounding of (l - m) / T), tokens under 2^-46 of the most likely one
 * never. Every non-greedy sample takes one draw, whatever the cuts.
 *
 * <p>Cost on V = 256 (see jmh DecodeStepBench): greedy is one pass for the maximum and one for its first
 * index; sampling adds one exp per token; top-k a linear-time selection; top-p a linear-time weighted
 * selection instead of a sort.
 */
public final class Sampler {
    /** The largest vocabulary the definition covers (masses of 2^16 tokens still sum exactly in a long). */
    public static final int MAX_VOCAB = 65536;
    private static final long GOLDEN = 0x9E3779B97F4A7C15L;
    private static final float MASS_SCALE = 0x1p46f;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT;
    private static final int BLOCK = 16;

    private final SamplingParams params;
    private final int vocab;
    private final int k;          // effective top-k: 1..vocab
    private final boolean cut;    // top-k or top-p removes tokens
    private final float invTemp;
    private final float[] logits; // the row, bulk-copied from off-heap memory
    private final long[] mass;    // by token id; 0 for tokens the cuts removed
    private final float[] blockMax;
    private final long[] keys;    // candidates of the cuts, see key()
    private long draws;

    public Sampler(SamplingParams params, int vocabSize) {
        if (vocabSize < 1 || vocabSize > MAX_VOCAB) {
            throw new IllegalArgumentException("vocabulary size must be in [1, " + MAX_VOCAB + "], got " + vocabSize);
        }
        this.params = params;
        this.vocab = vocabSize;
        this.k = params.topK() == 0 ? vocabSize : Math.min(params.topK(), vocabSize);
        this.invTemp = params.isGreedy() ? 0f : 1f / params.temperature();
        this.logits = new float[vocabSize];
        this.mass = params.isGreedy() ? null : new long[vocabSize];
        this.blockMax = new float[(vocabSize + BLOCK - 1) / BLOCK];
        this.cut = !params.isGreedy() && (k < vocabSize || params.topP() < 1f);
        this.keys = cut ? new long[vocabSize] : null;
    }

    public SamplingParams params() {
        return params;
    }

    /** Random numbers drawn so far (the stream's position): the next sample uses draw {@code draws() + 1}. */
    public long draws() {
        return draws;
    }

    /** Moves the stream: the next sample uses draw {@code draws + 1} (a resumed sequence continues its stream). */
    public void seek(long draws) {
        if (draws < 0) {
            throw new IllegalArgumentException("draws must be >= 0, got " + draws);
        }
        this.draws = draws;
    }

    /**
     * A token for the logits row at {@code offset} (bytes) in {@code row}: V f32 values.
     *
     * @throws IllegalStateException when the row holds NaN or +Infinity, or only -Infinity
     */
    public int sample(MemorySegment row, long offset) {
        MemorySegment.copy(row, F32, offset, logits, 0, vocab);
        float max = max(logits, vocab);
        if (params.isGreedy()) {
            return firstIndexOf(logits, vocab, max);
        }
        long total = 0;
        if (cut) {
            total = massesAfterCuts(max);
        } else {
            float t = invTemp;
            for (int i = 0; i < vocab; i++) {
                mass[i] = (long) (expNonPositive((logits[i] - max) * t) * MASS_SCALE);
                total += mass[i];
            }
        }
        long target = Math.unsignedMultiplyHigh(nextBits(), total);
        long acc = 0;
        for (int i = 0; i < vocab; i++) {
            acc += mass[i];
            if (acc > target) {
                return i;
            }
        }
        throw new IllegalStateException("unreachable: the draw lies below the total mass");
    }

    /**
     * The masses of the tokens top-k and top-p keep, 0 for the others (only candidates pay for an exp);
     * returns the kept mass.
     */
    private long massesAfterCuts(float max) {
        for (int i = 0; i < vocab; i++) {
            keys[i] = key(logits[i], i);
        }
        int first = 0;
        int n = vocab;
        if (k < vocab) {
            selectLargest(keys, vocab, k); // the k candidates now sit in keys[vocab-k .. vocab)
            first = vocab - k;
            n = k;
            Arrays.fill(mass, 0L);
        }
        float t = invTemp;
        long total = 0;
        for (int j = first; j < first + n; j++) {
            int id = idOf(keys[j]);
            mass[id] = (long) (expNonPositive((logits[id] - max) * t) * MASS_SCALE);
            total += mass[id];
        }
        if (params.topP() < 1f) {
            long threshold = nucleus(first, n, total); // permutes keys[first .. first+n) only
            total = 0;
            for (int j = first; j < first + n; j++) {
                int id = idOf(keys[j]);
                if (keys[j] < threshold) {
                    mass[id] = 0;
                }
                total += mass[id];
            }
        }
        return total;
    }

    /**
     * The key of the last token of the nucleus among keys[first .. first+n): the shortest prefix in key order
     * whose mass reaches min(M, ceil(p * M)) of the candidates' mass M ({@code total}). A weighted quickselect, linear time
     * where sorting would be n log n; exact because the masses are integers.
     */
    private long nucleus(int first, int n, long total) {
        long need = Math.min(total, (long) Math.ceil((double) params.topP() * (double) total));
        int lo = first;
        int hi = first + n;
        while (true) {
            if (hi - lo <= BLOCK) {
                // sort what is left, larger keys first, and take until the mass is reached
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
                    need -= mass[idOf(keys[i])];
                    if (need <= 0) {
                        return keys[i];
                    }
                }
                throw new IllegalStateException("unreachable: the nucleus needs no more than the candidates' mass");
            }
            int mid = lo + (hi - lo) / 2;
            long pivot = keys[mid];
            keys[mid] = keys[hi - 1];
            keys[hi - 1] = pivot;
            int j = lo;
            long upper = 0;
            for (int i = lo; i < hi - 1; i++) {
                long v = keys[i];
                if (v > pivot) {
                    keys[i] = keys[j];
                    keys[j++] = v;
                    upper += mass[idOf(v)];
                }
            }
            keys[hi - 1] = keys[j];
            keys[j] = pivot;
            if (upper >= need) {
                hi = j;
            } else {
                need -= upper + mass[idOf(pivot)];
                if (need <= 0) {
                    return pivot;
                }
                lo = j + 1;
            }
        }
    }

    /**
     * Bits 47..16: the logit's bits mapped so that unsigned order is float order (-0 as +0); bits 15..0:
     * 0xFFFF - id. A larger key comes first; keys are distinct and positive.
     */
    static long key(float v, int id) {
        int u = v == 0f ? 0 : Float.floatToRawIntBits(v);
        int o = u < 0 ? ~u : u | 0x80000000;
        return (Integer.toUnsignedLong(o) << 16) | (0xFFFF - id);
    }

    private static int idOf(long key) {
        return 0xFFFF - (int) (key & 0xFFFF);
    }

    /** The largest value, block maxima left in blockMax (greedy finds its block from them); bad rows refused. */
    private float max(float[] a, int n) {
        float m = Float.NEGATIVE_INFINITY;
        int nb = blockMax.length;
        for (int b = 0; b < nb; b++) {
            int lo = b * BLOCK;
            int hi = Math.min(n, lo + BLOCK);
            float bm = Float.NEGATIVE_INFINITY;
            for (int i = lo; i < hi; i++) {
                bm = Math.max(bm, a[i]); // Math.max propagates NaN
            }
            blockMax[b] = bm;
            m = Math.max(m, bm);
        }
        if (m != m) {
            throw new IllegalStateException("the logits hold NaN");
        }
        if (Float.isInfinite(m)) {
            throw new IllegalStateException(m > 0 ? "the logits hold +Infinity" : "every logit is -Infinity");
        }
        return m;
    }

    /** The first index holding v, the maximum: its block from the block maxima, then a scan of 16. */
    private int firstIndexOf(float[] a, int n, float v) {
        for (int b = 0; b < blockMax.length; b++) {
            if (blockMax[b] == v) {
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
     * bits of t. Plain float arithmetic only, so every JVM gives the same bits; faster than Math.exp
     * (BENCHMARKS.md "From code comments").
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

    /** The next draw's 64 random bits: SplitMix64's output for counter draws + 1. */
    private long nextBits() {
        return drawBits(params.seed(), ++draws);
    }

    /** SplitMix64's output for counter {@code draw} of the stream {@code seed}. */
    static long drawBits(long seed, long draw) {
        long z = seed + draw * GOLDEN;
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
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
