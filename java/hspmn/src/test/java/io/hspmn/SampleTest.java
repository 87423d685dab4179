package io.hspmn;

import io.hspmn.generate.Sampler;
import io.hspmn.generate.SamplingParams;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@link Hspmn#sample} (the native sample_tokens op) returns the Java {@link Sampler}'s token, bit for bit, on
 * thousands of random rows of every mode: one definition (native/README.md "Sampling") in two languages.
 */
class SampleTest {
    static final int[] SIZES = {1, 2, 7, 33, 255, 256, 1000, 1025, 4097};

    /** A random case in the styles of native/reference/emulate_sample_kernel.py: ties, -inf, zeros, underflow. */
    record Case(float[] logits, SamplingParams params, long draw) {
    }

    static Case randomCase(Random r, int v) {
        float[] x = new float[v];
        int style = r.nextInt(6);
        double scale = 0.1 + 8 * r.nextDouble();
        float same = (float) (r.nextDouble() * 4 - 2);
        for (int i = 0; i < v; i++) {
            x[i] = switch (style) {
                case 0 -> (float) (r.nextGaussian() * scale);
                case 1 -> r.nextInt(6) - 3;                           // many ties
                case 2 -> same;                                       // all equal
                case 3 -> (float) (r.nextGaussian() * 1e-6 + 5);      // masses tie after the float exp
                case 4 -> (float) (r.nextGaussian() * 30);            // most masses underflow to 0
                default -> (r.nextBoolean() ? -0f : 0f) + r.nextInt(2); // signed zeros and ones
            };
        }
        if (v > 2 && r.nextBoolean()) {
            for (int i = 0; i < v; i++) {
                if (r.nextDouble() < 0.3) {
                    x[i] = Float.NEGATIVE_INFINITY;
                }
            }
            x[r.nextInt(v)] = (float) (r.nextDouble() * 2 - 1);
        }
        float[] temps = {0f, 0.05f, 0.7f, 1f, 1.5f, 100f};
        int[] ks = {0, 0, 1, 2, 3, 17, 40, Math.max(1, v - 1), v, v + 5};
        float[] ps = {1f, 1f, 0.01f, 0.3f, 0.5f, 0.9f, 0.999f};
        SamplingParams p = new SamplingParams(temps[r.nextInt(temps.length)], ks[r.nextInt(ks.length)],
                ps[r.nextInt(ps.length)], r.nextLong());
        return new Case(x, p, 1 + (r.nextLong() >>> 24));
    }

    /** The Java sampler's token for draw c.draw of the stream. */
    static int javaToken(Case c, Arena arena) {
        Sampler s = new Sampler(c.params(), c.logits().length);
        s.seek(c.draw() - 1);
        int t = s.sample(arena.allocateFrom(ValueLayout.JAVA_FLOAT, c.logits()), 0);
        assertEquals(c.params().isGreedy() ? c.draw() - 1 : c.draw(), s.draws()); // greedy takes no draw
        return t;
    }

    /** Rows of one V through Hspmn.sample against the Java sampler; returns the rows checked. */
    static int compare(Context ctx, MemoryKind memory, Random r, int v, int n) {
        Case[] cases = new Case[n];
        float[] x = new float[n * v];
        SamplingParams[] params = new SamplingParams[n];
        long[] draws = new long[n];
        for (int i = 0; i < n; i++) {
            cases[i] = randomCase(r, v);
            System.arraycopy(cases[i].logits(), 0, x, i * v, v);
            params[i] = cases[i].params();
            draws[i] = cases[i].draw();
        }
        int[] got;
        try (Tensor host = Tensor.of(ctx, DType.F32, x, n, v);
             Tensor logits = Tensor.create(ctx, DType.F32, memory, n, v);
             Tensor tokens = Tensor.create(ctx, DType.I32, memory, n)) {
            logits.copyFrom(host);
            Hspmn.sample(ctx, logits, params, draws, tokens);
            got = tokens.toIntArray();
        }
        try (Arena arena = Arena.ofConfined()) {
            for (int i = 0; i < n; i++) {
                int want = javaToken(cases[i], arena);
                int row = i;
                assertEquals(want, got[i], () -> "V=" + v + " row " + row + " " + cases[row].params() + " draw "
                        + cases[row].draw() + ": native " + got[row] + ", Java " + want);
            }
        }
        return n;
    }

    static int compareAll(Context ctx, MemoryKind memory, long seed) {
        Random r = new Random(seed);
        int rows = 0;
        for (int v : SIZES) {
            for (int b = 0; b < 5; b++) {
                rows += compare(ctx, memory, r, v, 64);
            }
        }
        rows += compare(ctx, memory, r, 65536, 12);
        return rows;
    }

    @Test
    void cpuOpEqualsTheJavaSampler() {
        try (Context ctx = Context.create(Backend.CPU)) {
            int rows = compareAll(ctx, MemoryKind.HOST, 21);
            assertTrue(rows > 2800, "rows " + rows);
        }
    }

    @Test
    void badRowsAreTypedErrorsAndTheOtherRowsAreSampled() {
        try (Context ctx = Context.create(Backend.CPU)) {
            float[] x = {0f, 1f, 2f, 0f, Float.NaN, 2f, 1f, 3f, 0f};
            SamplingParams[] p = {SamplingParams.greedy(), SamplingParams.greedy(), SamplingParams.greedy()};
            try (Tensor logits = Tensor.of(ctx, DType.F32, x, 3, 3); Tensor tokens = Tensor.create(ctx, DType.I32, 3)) {
                NonFiniteInputException e = assertThrows(NonFiniteInputException.class,
                        () -> Hspmn.sample(ctx, logits, p, new long[3], tokens));
                assertTrue(e.getMessage().contains("logits row 1 holds NaN"), e.getMessage());
                assertEquals("[2, -1, 1]", Arrays.toString(tokens.toIntArray()));
                // arguments Java checks before the call: the params array must cover the rows
                assertThrows(IllegalArgumentException.class,
                        () -> Hspmn.sample(ctx, logits, Arrays.copyOf(p, 2), new long[2], tokens));
                assertThrows(IllegalArgumentException.class, () -> Hspmn.sample(ctx, logits, p, new long[2], tokens));
                // and what the library checks: a non-greedy row needs a draw >= 1
                SamplingParams[] hot = {SamplingParams.temperature(1f, 1), p[1], p[2]};
                x[4] = 0f;
                logits.copyFrom(x);
                InvalidArgumentException bad = assertThrows(InvalidArgumentException.class,
                        () -> Hspmn.sample(ctx, logits, hot, new long[3], tokens));
                assertTrue(bad.getMessage().contains("params[0].draw (0) must be >= 1"), bad.getMessage());
                Hspmn.sample(ctx, logits, hot, new long[] {1, 0, 0}, tokens);
            }
        }
    }
}
