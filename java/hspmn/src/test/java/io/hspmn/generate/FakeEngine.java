package io.hspmn.generate;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.concurrent.Semaphore;

/**
 * A DecodeEngine without a model: a sequence's logits are a pseudo-random function of its whole history, so
 * the same history gives the same logits in any batch. A gate, when set, makes every step and prefill piece wait
 * for a permit (tests use it to hold sequences in flight).
 */
public final class FakeEngine implements DecodeEngine {
    static final class Seq extends SequenceState {
        int[] ids;
    }

    private final int vocab;
    private final int maxLength;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment out;
    public volatile Semaphore gate;
    public volatile int live;
    volatile boolean closed;
    volatile Thread lastCaller;
    volatile int failStepsAtLength = -1;

    public FakeEngine(int vocab, int maxLength, int maxBatch) {
        this.vocab = vocab;
        this.maxLength = maxLength;
        this.out = arena.allocate(4L * vocab * maxBatch, 64);
    }

    @Override
    public int vocabSize() {
        return vocab;
    }

    @Override
    public int numLayers() {
        return 1;
    }

    @Override
    public int maxLength() {
        return maxLength;
    }

    private void pass() {
        lastCaller = Thread.currentThread();
        Semaphore g = gate;
        if (g != null) {
            g.acquireUninterruptibly();
        }
    }

    /** Logits of a history: a SplitMix stream seeded by its hash, scaled so sampling is not flat. */
    static void fill(int[] ids, int length, MemorySegment dst, long offset, int vocab) {
        long h = 1469598103934665603L;
        for (int i = 0; i < length; i++) {
            h = (h ^ ids[i]) * 1099511628211L;
        }
        for (int v = 0; v < vocab; v++) {
            long z = h + (v + 1) * 0x9E3779B97F4A7C15L;
            z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
            z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
            z ^= z >>> 31;
            dst.set(ValueLayout.JAVA_FLOAT, offset + 4L * v, ((z >>> 40) * 0x1.0p-24f) * 6f);
        }
    }

    @Override
    public Sequence open() {
        Seq s = new Seq();
        s.ids = new int[maxLength];
        live++;
        return s;
    }

    @Override
    public MemorySegment extend(Sequence sequence, MemorySegment ids, int count, boolean wantLogits) {
        pass();
        Seq s = (Seq) sequence;
        s.checkExtend(count, maxLength);
        MemorySegment.copy(ids, ValueLayout.JAVA_INT, 0, s.ids, s.length, count);
        s.length += count;
        if (!wantLogits) {
            return null;
        }
        fill(s.ids, s.length, out, 0, vocab);
        return out.asSlice(0, 4L * vocab);
    }

    @Override
    public MemorySegment step(Sequence[] sequences, int count, MemorySegment nextIds) {
        pass();
        for (int i = 0; i < count; i++) {
            Seq s = (Seq) sequences[i];
            s.checkStep(i, maxLength);
            if (s.length + 1 == failStepsAtLength) {
                throw new IllegalStateException("injected failure at length " + failStepsAtLength);
            }
        }
        for (int i = 0; i < count; i++) {
            Seq s = (Seq) sequences[i];
            s.ids[s.length++] = nextIds.getAtIndex(ValueLayout.JAVA_INT, i);
            fill(s.ids, s.length, out, 4L * vocab * i, vocab);
        }
        return out.asSlice(0, 4L * vocab * count);
    }

    /** When set, the engine samples (as the cached engine does natively) with the Java {@link Sampler}. */
    volatile boolean samples;
    /** A step that takes a sequence to this length gives it NaN logits. */
    volatile int nanAtLength = -1;
    volatile int sampledSteps;

    @Override
    public boolean samplesTokens() {
        return samples;
    }

    @Override
    public MemorySegment stepSampled(Sequence[] sequences, int count, MemorySegment nextIds, MemorySegment params,
                                     MemorySegment sampled, boolean wantLogits) {
        if (!samples) {
            return DecodeEngine.super.stepSampled(sequences, count, nextIds, params, sampled, wantLogits);
        }
        MemorySegment logits = step(sequences, count, nextIds);
        sampledSteps++;
        for (int i = 0; i < count; i++) {
            long o = io.hspmn.StepArrays.PARAMS_BYTES * i;
            if (((Seq) sequences[i]).length == nanAtLength) {
                logits.setAtIndex(ValueLayout.JAVA_FLOAT, (long) vocab * i + 3, Float.NaN);
                sampled.setAtIndex(ValueLayout.JAVA_INT, i, -1);
                continue;
            }
            SamplingParams p = new SamplingParams(params.get(ValueLayout.JAVA_FLOAT, o), params.get(ValueLayout.JAVA_INT, o + 4),
                    params.get(ValueLayout.JAVA_FLOAT, o + 8), params.get(ValueLayout.JAVA_LONG, o + 16));
            Sampler sm = new Sampler(p, vocab);
            sm.seek(params.get(ValueLayout.JAVA_LONG, o + 24) - 1);
            sampled.setAtIndex(ValueLayout.JAVA_INT, i, sm.sample(logits, 4L * vocab * i));
        }
        return wantLogits ? logits : null;
    }

    @Override
    public void release(Sequence sequence) {
        Seq s = (Seq) sequence;
        if (!s.released) {
            s.released = true;
            live--;
        }
    }

    @Override
    public ForwardReport forwardReport(MemorySegment ids, int count) {
        return new ForwardReport(Double.NaN, new float[] {0f}, new float[] {0.5f}, null);
    }

    @Override
    public void close() {
        closed = true;
        arena.close();
    }

    /** The tokens a sequence would generate greedily from a prompt, computed without any engine. */
    static int[] greedy(int[] prompt, int n, int vocab) {
        int[] h = Arrays.copyOf(prompt, prompt.length + n);
        MemorySegment row = Arena.ofAuto().allocate(4L * vocab);
        int[] out = new int[n];
        for (int i = 0; i < n; i++) {
            fill(h, prompt.length + i, row, 0, vocab);
            out[i] = Sampler.argmax(row, 0, vocab);
            h[prompt.length + i] = out[i];
        }
        return out;
    }
}
