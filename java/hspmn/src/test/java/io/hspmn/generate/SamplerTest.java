package io.hspmn.generate;

import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.HashSet;
import java.util.Random;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class SamplerTest {
    private static final Arena ARENA = Arena.ofAuto();

    private static MemorySegment row(float... v) {
        return ARENA.allocateFrom(ValueLayout.JAVA_FLOAT, v);
    }

    /** n standard-normal logits from java.util.Random(seed). */
    private static float[] gaussian(long seed, int n) {
        Random r = new Random(seed);
        float[] l = new float[n];
        for (int i = 0; i < n; i++) {
            l[i] = (float) r.nextGaussian();
        }
        return l;
    }

    private static float[] logitsOf(double... probs) {
        float[] l = new float[probs.length];
        for (int i = 0; i < probs.length; i++) {
            l[i] = (float) Math.log(probs[i]);
        }
        return l;
    }

    private static int[] draws(SamplingParams p, MemorySegment row, int vocab, int n) {
        Sampler s = new Sampler(p, vocab);
        int[] out = new int[n];
        for (int i = 0; i < n; i++) {
            out[i] = s.sample(row, 0);
        }
        return out;
    }

    private static double[] freq(int[] draws, int vocab) {
        double[] f = new double[vocab];
        for (int d : draws) {
            f[d] += 1.0 / draws.length;
        }
        return f;
    }

    /** Observed frequencies within 5 standard errors of the expected probabilities. */
    private static void assertMatches(double[] expected, double[] observed, int n) {
        for (int i = 0; i < expected.length; i++) {
            double se = Math.sqrt(Math.max(expected[i] * (1 - expected[i]), 1e-12) / n);
            assertEquals(expected[i], observed[i], 5 * se + 1e-9, "token " + i + ": expected " + Arrays.toString(expected)
                    + ", observed " + Arrays.toString(observed));
        }
    }

    @Test
    void paramsAreValidated() {
        assertThrows(IllegalArgumentException.class, () -> new SamplingParams(-0.1f, 0, 1f, 0));
        assertThrows(IllegalArgumentException.class, () -> new SamplingParams(Float.NaN, 0, 1f, 0));
        assertThrows(IllegalArgumentException.class, () -> new SamplingParams(Float.POSITIVE_INFINITY, 0, 1f, 0));
        assertThrows(IllegalArgumentException.class, () -> new SamplingParams(101f, 0, 1f, 0));
        assertThrows(IllegalArgumentException.class, () -> new SamplingParams(1f, -1, 1f, 0));
        assertThrows(IllegalArgumentException.class, () -> new SamplingParams(1f, 0, 0f, 0));
        assertThrows(IllegalArgumentException.class, () -> new SamplingParams(1f, 0, 1.01f, 0));
        assertThrows(IllegalArgumentException.class, () -> new SamplingParams(1f, 0, Float.NaN, 0));
        assertThrows(IllegalArgumentException.class, () -> new SamplingParams(1e-40f, 0, 1f, 0)); // 1/T = +inf
        assertThrows(IllegalArgumentException.class, () -> new Sampler(SamplingParams.greedy(), 0));
        assertThrows(IllegalArgumentException.class, () -> new Sampler(SamplingParams.greedy(), Sampler.MAX_VOCAB + 1));
        assertThrows(IllegalArgumentException.class, () -> new Sampler(SamplingParams.greedy(), 4).seek(-1));
        new SamplingParams(0f, 5, 0.5f, -7); // greedy with cuts is legal: the cuts change nothing
        new SamplingParams(Float.MIN_NORMAL, 0, 1f, 0);
        new Sampler(SamplingParams.greedy(), Sampler.MAX_VOCAB);
    }

    @Test
    void temperatureZeroIsGreedyWhateverTheOtherSettings() {
        float[] l = gaussian(1, 256);
        int best = 0;
        for (int i = 1; i < l.length; i++) {
            if (l[i] > l[best]) {
                best = i;
            }
        }
        MemorySegment seg = row(l);
        for (SamplingParams p : new SamplingParams[] {SamplingParams.greedy(), new SamplingParams(0f, 3, 0.2f, 99),
                new SamplingParams(0f, 0, 1f, -1)}) {
            int[] d = draws(p, seg, 256, 20);
            for (int t : d) {
                assertEquals(best, t, p.toString());
            }
        }
        assertEquals(best, Sampler.argmax(seg, 0, 256));
    }

    @Test
    void tiesGoToTheLowerId() {
        MemorySegment seg = row(0f, 3f, 1f, 3f);
        assertEquals(1, draws(SamplingParams.greedy(), seg, 4, 1)[0]);
        // top-1 among tied maxima is deterministic too, whatever the seed
        for (long seed = 0; seed < 20; seed++) {
            assertEquals(1, draws(new SamplingParams(1f, 1, 1f, seed), seg, 4, 1)[0]);
        }
    }

    @Test
    void sameSeedSameTokensOtherSeedOtherTokens() {
        float[] l = gaussian(2, 256);
        MemorySegment seg = row(l);
        for (SamplingParams p : new SamplingParams[] {SamplingParams.temperature(1f, 42), new SamplingParams(0.7f, 40, 1f, 42),
                new SamplingParams(1.3f, 0, 0.9f, 42), new SamplingParams(1f, 50, 0.8f, 42)}) {
            int[] a = draws(p, seg, 256, 200);
            int[] b = draws(p, seg, 256, 200);
            int[] c = draws(p.withSeed(43), seg, 256, 200);
            assertArrayEquals(a, b, p.toString());
            assertFalse(Arrays.equals(a, c), p + ": seeds 42 and 43 gave the same 200 tokens");
        }
    }

    @Test
    void knownSeedGivesKnownTokens() {
        // pins the random stream (SplitMix64 over a counter): a change of algorithm changes users' outputs
        MemorySegment seg = row(logitsOf(0.1, 0.2, 0.3, 0.4));
        int[] d = draws(SamplingParams.temperature(1f, 12345), seg, 4, 12);
        Sampler s = new Sampler(SamplingParams.temperature(1f, 12345), 4);
        double[] u = new double[12];
        for (int i = 0; i < 12; i++) {
            long z = 12345L + (i + 1) * 0x9E3779B97F4A7C15L;
            z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
            z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
            z ^= z >>> 31;
            u[i] = (z >>> 11) * 0x1.0p-53;
        }
        for (int i = 0; i < 12; i++) {
            int expect = u[i] < 0.1 ? 0 : u[i] < 0.3 ? 1 : u[i] < 0.6 ? 2 : 3;
            assertEquals(expect, d[i], "draw " + i + " u=" + u[i]);
            s.sample(seg, 0);
        }
        assertEquals(12, s.draws());
    }

    /** Tokens of the definition from native/reference/sampling_ref.py; native/tests/test_sample.cpp pins the same. */
    @Test
    void pinnedTokensOfTheDefinition() {
        float[] probs = {-2.3025851249694824f, -1.6094379425048828f, -1.2039728164672852f, -0.9162907600402832f};
        float[] row = {0.5f, -1f, 2f, 2f, 0.25f, Float.NEGATIVE_INFINITY, 1.75f, 0f};
        assertArrayEquals(new int[] {1, 1, 1, 1, 2, 2, 1, 2, 2, 3, 1, 2},
                draws(new SamplingParams(1f, 0, 1f, 12345), row(probs), 4, 12));
        assertArrayEquals(new int[] {6, 2, 2, 2, 2, 6, 2, 6, 2, 3, 2, 3},
                draws(new SamplingParams(0.8f, 3, 1f, 42), row(row), 8, 12));
        assertArrayEquals(new int[] {6, 2, 2, 2, 2, 6, 2, 6, 2, 3, 2, 3},
                draws(new SamplingParams(1.5f, 0, 0.6f, 42), row(row), 8, 12));
        assertArrayEquals(new int[] {2, 0, 6, 3, 3, 2, 3, 2, 2, 3, 0, 6},
                draws(new SamplingParams(2f, 5, 0.9f, 7), row(row), 8, 12));
        // seek: draw 7 of a fresh stream is the seventh token above
        Sampler s = new Sampler(new SamplingParams(2f, 5, 0.9f, 7), 8);
        s.seek(6);
        assertEquals(3, s.sample(row(row), 0));
        assertEquals(7, s.draws());
    }

    @Test
    void infiniteRowsAreRefusedInEveryMode() {
        float inf = Float.POSITIVE_INFINITY;
        for (SamplingParams p : new SamplingParams[] {SamplingParams.greedy(), SamplingParams.temperature(1f, 1),
                new SamplingParams(1f, 2, 0.5f, 1)}) {
            IllegalStateException plus = assertThrows(IllegalStateException.class, () -> draws(p, row(0f, inf, 1f), 3, 1));
            assertTrue(plus.getMessage().contains("+Infinity"), plus.getMessage());
            IllegalStateException minus = assertThrows(IllegalStateException.class, () -> draws(p, row(-inf, -inf), 2, 1));
            assertTrue(minus.getMessage().contains("every logit is -Infinity"), minus.getMessage());
            // -inf entries are masked tokens, never drawn
            for (int t : draws(p, row(-inf, 0.5f, -inf, 0.25f), 4, 200)) {
                assertTrue(t == 1 || t == 3, p + ": " + t);
            }
        }
    }

    @Test
    void signedZerosTie() {
        // -0 equals +0: greedy and top-1 take the lower id, and top-2 keeps both zeros and cuts the rest
        MemorySegment seg = row(-1f, -0f, 0f, -1f);
        assertEquals(1, draws(SamplingParams.greedy(), seg, 4, 1)[0]);
        for (int t : draws(new SamplingParams(1f, 1, 1f, 3), seg, 4, 50)) {
            assertEquals(1, t);
        }
        MemorySegment mixed = row(-1f, 0f, -0f, 0f);
        int[] seen = new int[4];
        for (int t : draws(new SamplingParams(1f, 2, 1f, 3), mixed, 4, 400)) {
            seen[t]++;
        }
        assertEquals(0, seen[0] + seen[3], Arrays.toString(seen));
        assertTrue(seen[1] > 100 && seen[2] > 100, Arrays.toString(seen));
    }

    /**
     * Chi-square of many draws against the definition's exact distribution (mass_i / kept mass), for every
     * mode; the seed is fixed, so the check is deterministic and cannot flake. The critical value has
     * probability ~1e-6 under the null hypothesis (Wilson-Hilferty), and bins outside the kept set must stay empty.
     */
    @Test
    void frequenciesPassAChiSquareTest() {
        Random r = new Random(11);
        float[] l = new float[40];
        for (int i = 0; i < l.length; i++) {
            l[i] = (float) (r.nextGaussian() * 1.5);
        }
        l[3] = l[0];
        l[9] = l[0];
        l[20] = Float.NEGATIVE_INFINITY;
        l[21] = Float.NEGATIVE_INFINITY;
        MemorySegment seg = row(l);
        int n = 100_000;
        for (SamplingParams p : new SamplingParams[] {SamplingParams.temperature(1f, 0xC0FFEE),
                SamplingParams.temperature(0.6f, 0xC0FFEE), new SamplingParams(1.3f, 7, 1f, 0xC0FFEE),
                new SamplingParams(0.9f, 0, 0.8f, 0xC0FFEE), new SamplingParams(1f, 12, 0.7f, 0xC0FFEE)}) {
            double[] prob = exactDistribution(l, p);
            double[] obs = new double[l.length];
            for (int t : draws(p, seg, l.length, n)) {
                obs[t]++;
            }
            double chi2 = 0;
            double poolObs = 0;
            double poolExp = 0;
            int bins = 0;
            for (int i = 0; i < l.length; i++) {
                double e = prob[i] * n;
                if (prob[i] == 0) {
                    assertEquals(0, obs[i], p + ": token " + i + " is outside the kept set");
                } else if (e >= 5) {
                    chi2 += (obs[i] - e) * (obs[i] - e) / e;
                    bins++;
                } else {
                    poolObs += obs[i];
                    poolExp += e;
                }
            }
            if (poolExp > 0) {
                chi2 += (poolObs - poolExp) * (poolObs - poolExp) / poolExp;
                bins++;
            }
            int df = bins - 1;
            double h = 2.0 / (9.0 * df);
            double critical = df * Math.pow(1 - h + 4.753 * Math.sqrt(h), 3);
            assertTrue(chi2 < critical, p + ": chi2 " + chi2 + " >= " + critical + " (df " + df + ")");
        }
    }

    /** mass_i / kept mass, computed from the definition with a plain sort (the sampler uses selections). */
    private static double[] exactDistribution(float[] l, SamplingParams p) {
        int v = l.length;
        float max = Float.NEGATIVE_INFINITY;
        for (float x : l) {
            max = Math.max(max, x);
        }
        long[] mass = new long[v];
        for (int i = 0; i < v; i++) {
            mass[i] = (long) (Sampler.expNonPositive((l[i] - max) * (1f / p.temperature())) * 0x1p46f);
        }
        Integer[] order = new Integer[v];
        for (int i = 0; i < v; i++) {
            order[i] = i;
        }
        Arrays.sort(order, (a, b) -> Long.compare(Sampler.key(l[b], b), Sampler.key(l[a], a)));
        int kept = p.topK() == 0 ? v : Math.min(p.topK(), v);
        long total = 0;
        for (int j = 0; j < kept; j++) {
            total += mass[order[j]];
        }
        if (p.topP() < 1f) {
            long need = Math.min(total, (long) Math.ceil((double) p.topP() * (double) total));
            long acc = 0;
            for (int j = 0; j < kept; j++) {
                acc += mass[order[j]];
                if (acc >= need) {
                    kept = j + 1;
                    total = acc;
                    break;
                }
            }
        }
        double[] prob = new double[v];
        for (int j = 0; j < kept; j++) {
            prob[order[j]] = (double) mass[order[j]] / total;
        }
        return prob;
    }

    @Test
    void temperatureOneFollowsTheSoftmax() {
        double[] p = {0.05, 0.1, 0.2, 0.3, 0.35};
        int n = 40_000;
        assertMatches(p, freq(draws(SamplingParams.temperature(1f, 7), row(logitsOf(p)), 5, n), 5), n);
    }

    @Test
    void temperatureSharpensAndFlattens() {
        double[] p = {0.05, 0.1, 0.2, 0.3, 0.35};
        int n = 40_000;
        for (float t : new float[] {0.5f, 2f}) {
            double[] q = new double[p.length];
            double z = 0;
            for (int i = 0; i < p.length; i++) {
                q[i] = Math.pow(p[i], 1 / t);
                z += q[i];
            }
            for (int i = 0; i < p.length; i++) {
                q[i] /= z;
            }
            assertMatches(q, freq(draws(SamplingParams.temperature(t, 8), row(logitsOf(p)), 5, n), 5), n);
        }
    }

    @Test
    void topKKeepsExactlyTheKMostLikely() {
        Random r = new Random(3);
        float[] l = new float[256];
        for (int i = 0; i < l.length; i++) {
            l[i] = (float) r.nextGaussian() * 0.5f;
        }
        Integer[] order = new Integer[256];
        for (int i = 0; i < 256; i++) {
            order[i] = i;
        }
        Arrays.sort(order, (a, b) -> Float.compare(l[b], l[a]));
        int k = 5;
        double[] expect = new double[256];
        double z = 0;
        for (int j = 0; j < k; j++) {
            z += Math.exp(l[order[j]]);
        }
        for (int j = 0; j < k; j++) {
            expect[order[j]] = Math.exp(l[order[j]]) / z;
        }
        int n = 40_000;
        int[] d = draws(new SamplingParams(1f, k, 1f, 11), row(l), 256, n);
        Set<Integer> seen = new HashSet<>();
        for (int t : d) {
            seen.add(t);
        }
        Set<Integer> top = new HashSet<>(Arrays.asList(order).subList(0, k));
        assertEquals(top, seen);
        assertMatches(expect, freq(d, 256), n);
        // k at or above V keeps everything
        int[] all = draws(new SamplingParams(1f, 1000, 1f, 11), row(l), 256, 200);
        assertArrayEquals(draws(new SamplingParams(1f, 0, 1f, 11), row(l), 256, 200), all);
    }

    @Test
    void topPKeepsTheSmallestNucleus() {
        double[] p = {0.05, 0.3, 0.15, 0.5};
        int n = 30_000;
        // 0.5 < 0.75 <= 0.5 + 0.3: the nucleus is {3, 1}
        assertMatches(new double[] {0, 0.3 / 0.8, 0, 0.5 / 0.8},
                freq(draws(new SamplingParams(1f, 0, 0.75f, 5), row(logitsOf(p)), 4, n), 4), n);
        // 0.8 < 0.9 <= 0.95: {3, 1, 2}
        assertMatches(new double[] {0, 0.3 / 0.95, 0.15 / 0.95, 0.5 / 0.95},
                freq(draws(new SamplingParams(1f, 0, 0.9f, 5), row(logitsOf(p)), 4, n), 4), n);
        // a tiny p keeps only the most likely token
        int[] d = draws(new SamplingParams(1f, 0, 0.01f, 5), row(logitsOf(p)), 4, 100);
        for (int t : d) {
            assertEquals(3, t);
        }
        // top-k first, then top-p on what is left: k=2 keeps {3, 1}, p=0.6 of (0.5+0.3) = 0.48 <= 0.5: {3}
        int[] kp = draws(new SamplingParams(1f, 2, 0.6f, 5), row(logitsOf(p)), 4, 100);
        for (int t : kp) {
            assertEquals(3, t);
        }
    }

    @Test
    void nanLogitsAreRefused() {
        MemorySegment seg = row(0f, Float.NaN, 1f);
        assertThrows(IllegalStateException.class, () -> draws(SamplingParams.greedy(), seg, 3, 1));
        assertThrows(IllegalStateException.class, () -> draws(SamplingParams.temperature(1f, 1), seg, 3, 1));
        assertThrows(IllegalStateException.class, () -> draws(new SamplingParams(1f, 2, 0.5f, 1), seg, 3, 1));
    }

    @Test
    void logProbIsLogSoftmax() {
        float[] l = {1f, 2f, 3f, -4f};
        double z = 0;
        for (float v : l) {
            z += Math.exp(v);
        }
        for (int i = 0; i < l.length; i++) {
            assertEquals(l[i] - Math.log(z), Sampler.logProb(row(l), 0, 4, i), 1e-6);
        }
    }

    @Test
    void fastExpIsFloatAccurate() {
        double worst = 0;
        for (int i = 0; i <= 1_000_000; i++) {
            float x = -87f * i / 1_000_000;
            double want = Math.exp(x);
            double got = Sampler.expNonPositive(x);
            worst = Math.max(worst, Math.abs(got - want) / want);
        }
        assertTrue(worst < 3e-7, "worst relative error " + worst);
        assertEquals(1f, Sampler.expNonPositive(0f));
        assertEquals(0f, Sampler.expNonPositive(-100f));
        assertEquals(0f, Sampler.expNonPositive(Float.NEGATIVE_INFINITY));
        assertTrue(Float.isNaN(Sampler.expNonPositive(Float.NaN)));
    }

    @Test
    void nucleusIsTheSmallestPrefixOfTheSortedDistribution() {
        // against a plain sort, on many random rows, sizes and p (V above and below the selection's cutoff)
        Random r = new Random(6);
        for (int trial = 0; trial < 300; trial++) {
            int vocab = 2 + r.nextInt(300);
            float[] l = new float[vocab];
            for (int i = 0; i < vocab; i++) {
                l[i] = r.nextInt(4) == 0 ? (float) r.nextInt(3) : (float) (r.nextGaussian() * 2); // ties too
            }
            float p = 0.05f + 0.9f * r.nextFloat();
            Integer[] order = new Integer[vocab];
            for (int i = 0; i < vocab; i++) {
                order[i] = i;
            }
            Arrays.sort(order, (a, b) -> l[a] != l[b] ? Float.compare(l[b], l[a]) : Integer.compare(a, b));
            float max = l[order[0]];
            double total = 0;
            for (int i = 0; i < vocab; i++) {
                total += Sampler.expNonPositive(l[i] - max);
            }
            Set<Integer> nucleus = new HashSet<>();
            double acc = 0;
            for (int j = 0; j < vocab; j++) {
                nucleus.add(order[j]);
                acc += Sampler.expNonPositive(l[order[j]] - max);
                if (acc >= p * total * (1 + 1e-6)) {
                    break;
                }
            }
            Set<Integer> seen = new HashSet<>();
            for (int t : draws(new SamplingParams(1f, 0, p, trial), row(l), vocab, 400)) {
                seen.add(t);
            }
            assertTrue(nucleus.containsAll(seen), "trial " + trial + ": drew outside the nucleus " + nucleus + ": " + seen);
        }
    }

    @Test
    void selectLargestMatchesSorting() {
        Random r = new Random(4);
        for (int trial = 0; trial < 500; trial++) {
            int n = 1 + r.nextInt(300);
            int k = 1 + r.nextInt(n);
            long[] a = new long[n];
            for (int i = 0; i < n; i++) {
                a[i] = ((long) r.nextInt(20) << 32) | i; // many equal high halves, distinct keys
            }
            long[] sorted = a.clone();
            Arrays.sort(sorted);
            Sampler.selectLargest(a, n, k);
            long[] tail = Arrays.copyOfRange(a, n - k, n);
            Arrays.sort(tail);
            assertArrayEquals(Arrays.copyOfRange(sorted, n - k, n), tail, "n=" + n + " k=" + k);
        }
    }
}
