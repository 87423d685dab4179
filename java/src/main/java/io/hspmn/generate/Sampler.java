package io.hspmn.generate;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

/**
 * Picks a token from a row of logits under {@link SamplingParams}. One sampler per sequence: it holds the
 * sequence's random stream and scratch arrays, so sampling allocates nothing. Not thread-safe.
 *
 * <p>The random stream is SplitMix64 over a counter (draw i uses mix(seed + (i+1) * golden)), so a seed
 * reproduces its tokens on any JVM. Ties between equal logits go to the lower token id everywhere
 * (greedy, the top-k cut and the nucleus order).
 */
public final class Sampler {
    private static final long GOLDEN = 0x9E3779B97F4A7C15L;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT;

    private final SamplingParams params;
    private final int vocab;
    private final int k;          // effective top-k: 1..vocab
    private final float invTemp;
    private final float[] logits; // the row, read once from off-heap memory
    private final long[] keys;    // candidates as sortable (logit, id) keys
    private final double[] probs;
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
        boolean needKeys = !params.isGreedy() && (k < vocabSize || params.topP() < 1f);
        this.keys = needKeys ? new long[vocabSize] : null;
        this.probs = params.isGreedy() ? null : new double[vocabSize];
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
     * @throws IllegalStateException when the row holds NaN (a model fault, not a choice to make here)
     */
    public int sample(MemorySegment row, long offset) {
        if (params.isGreedy()) {
            return argmax(row, offset, vocab);
        }
        MemorySegment.copy(row, F32, offset, logits, 0, vocab);
        float max = Float.NEGATIVE_INFINITY;
        for (int i = 0; i < vocab; i++) {
            float v = logits[i];
            if (Float.isNaN(v)) {
                throw new IllegalStateException("logit " + i + " is NaN");
            }
            max = Math.max(max, v);
        }
        if (max == Float.NEGATIVE_INFINITY) {
            throw new IllegalStateException("every logit is -Infinity");
        }
        if (keys == null) {
            return sampleAll(max);
        }
        int n = candidates();
        return sampleSorted(n, max);
    }

    /** Softmax over every token, then one draw. */
    private int sampleAll(float max) {
        double total = 0;
        for (int i = 0; i < vocab; i++) {
            double p = Math.exp((logits[i] - max) * invTemp);
            probs[i] = p;
            total += p;
        }
        double u = nextDouble() * total;
        double acc = 0;
        for (int i = 0; i < vocab; i++) {
            acc += probs[i];
            if (u < acc) {
                return i;
            }
        }
        return lastPositive();
    }

    private int lastPositive() {
        for (int i = vocab - 1; i >= 0; i--) {
            if (probs[i] > 0) {
                return i;
            }
        }
        throw new IllegalStateException("no token has positive probability");
    }

    /**
     * Fills keys[0..n) with the top-k candidates, most likely first (lower id first among ties); returns n.
     * A key is the logit's order-preserving int bits over the complemented id, so sorting keys ascending
     * and reading from the end gives that order.
     */
    private int candidates() {
        for (int i = 0; i < vocab; i++) {
            keys[i] = key(logits[i], i);
        }
        if (k < vocab) {
            // move the k largest keys to the end, then sort only them
            selectLargest(keys, vocab, k);
            Arrays.sort(keys, vocab - k, vocab);
        } else {
            Arrays.sort(keys, 0, vocab);
        }
        // reverse the tail into keys[0..k) so index 0 is the most likely
        for (int a = 0, b = vocab - 1; a < k; a++, b--) {
            if (a >= b) {
                break;
            }
            long t = keys[a];
            keys[a] = keys[b];
            keys[b] = t;
        }
        return k;
    }

    private int sampleSorted(int n, float max) {
        double total = 0;
        for (int j = 0; j < n; j++) {
            double p = Math.exp((logitOf(keys[j]) - max) * invTemp);
            probs[j] = p;
            total += p;
        }
        if (params.topP() < 1f) {
            double want = params.topP() * total;
            double acc = 0;
            int m = 0;
            while (m < n) {
                acc += probs[m++];
                if (acc >= want) {
                    break;
                }
            }
            n = m;
            total = acc;
        }
        double u = nextDouble() * total;
        double acc = 0;
        for (int j = 0; j < n; j++) {
            acc += probs[j];
            if (u < acc) {
                return idOf(keys[j]);
            }
        }
        for (int j = n - 1; j >= 0; j--) {
            if (probs[j] > 0) {
                return idOf(keys[j]);
            }
        }
        throw new IllegalStateException("no token has positive probability");
    }

    private long key(float v, int id) {
        int bits = Float.floatToRawIntBits(v);
        bits ^= (bits >> 31) & 0x7fffffff; // negative floats: reverse their order
        return ((long) bits << 32) | (vocab - 1 - id);
    }

    private float logitOf(long key) {
        return logits[idOf(key)];
    }

    private int idOf(long key) {
        return vocab - 1 - (int) key;
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
