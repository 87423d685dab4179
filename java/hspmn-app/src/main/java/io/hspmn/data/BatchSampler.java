package io.hspmn.data;

import io.hspmn.DType;
import io.hspmn.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Objects;

/**
 * Draws batches of [B, S+1] byte windows from a split: row b holds S input bytes followed by one more,
 * so inputs are columns 0..S-1 and next-byte targets columns 1..S.
 *
 * <p>Each epoch cuts the split's stream into windows of stride S (consecutive windows share one
 * byte, the last target of one being the first input of the next) starting at a phase in [0, S),
 * and visits them in a keyed permutation; a shuffled sampler draws phase and permutation from
 * (seed, epoch), so successive epochs see different cuts and orders, and every byte of the split
 * (but the phase's head and the tail past the last whole window) is seen once per epoch. A batch
 * that runs past an epoch's end continues into the next. A sequential sampler (for validation) uses
 * phase 0 and stream order in every epoch.
 *
 * <p>Deterministic: the same split, B, S and seed give the same batches on any machine, and
 * {@link #state()} / {@link #restore} resume exactly. Not thread-safe.
 */
public final class BatchSampler {
    private final CorpusSplit split;
    private final int batch;
    private final int seqLen;
    private final long seed;
    private final boolean shuffled;
    private final byte[] window;
    private long epoch;
    private long index;
    // The current epoch's layout, rebuilt when the epoch changes.
    private long layoutEpoch = -1;
    private long phase;
    private long windows;
    private WindowPermutation order;

    private BatchSampler(CorpusSplit split, int batch, int seqLen, long seed, boolean shuffled) {
        this.split = Objects.requireNonNull(split, "split");
        if (batch < 1 || seqLen < 1) {
            throw new IllegalArgumentException("batch and seqLen must be positive, got batch=" + batch + ", seqLen=" + seqLen);
        }
        if (split.size() < (long) seqLen + 1) {
            throw new IllegalArgumentException("the " + split.name() + " split has " + split.size()
                    + " bytes, fewer than one window of seqLen+1 = " + (seqLen + 1)
                    + "; use a larger corpus, a larger validation fraction or a shorter sequence");
        }
        if ((long) batch * (seqLen + 1) > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException("batch*(seqLen+1) does not fit a Java array");
        }
        this.batch = batch;
        this.seqLen = seqLen;
        this.seed = seed;
        this.shuffled = shuffled;
        this.window = new byte[seqLen + 1];
    }

    /** Windows at a seeded phase and in a seeded order, different each epoch: for training. */
    public static BatchSampler shuffled(CorpusSplit split, int batch, int seqLen, long seed) {
        return new BatchSampler(split, batch, seqLen, seed, true);
    }

    /** Windows in stream order from offset 0, the same every epoch: for validation. */
    public static BatchSampler sequential(CorpusSplit split, int batch, int seqLen) {
        return new BatchSampler(split, batch, seqLen, 0, false);
    }

    /** Windows in epoch {@code e} (the phase makes it vary by one at most). */
    public long windowsInEpoch(long e) {
        long p = phaseOf(e);
        return (split.size() - 1 - p) / seqLen;
    }

    private long phaseOf(long e) {
        if (!shuffled) {
            return 0;
        }
        // Phase < min(S, size-S) keeps at least one whole window in the stream.
        long range = Math.min(seqLen, split.size() - seqLen);
        return Long.remainderUnsigned(SplitMix.mix(seed ^ SplitMix.mix(e * 2 + 1)), range);
    }

    private void layout() {
        if (layoutEpoch == epoch) {
            return;
        }
        phase = phaseOf(epoch);
        windows = (split.size() - 1 - phase) / seqLen;
        order = shuffled ? new WindowPermutation(windows, SplitMix.mix(seed ^ SplitMix.mix(epoch * 2 + 2))) : null;
        layoutEpoch = epoch;
    }

    /** Stream offset of the next window, advancing the position. */
    private long nextWindowStart() {
        layout();
        long j = shuffled ? order.apply(index) : index;
        long start = phase + j * seqLen;
        if (++index == windows) {
            epoch++;
            index = 0;
        }
        return start;
    }

    /** The next batch as a new row-major [B, S+1] array of byte values 0..255. */
    public int[] next() {
        int[] dst = new int[batch * (seqLen + 1)];
        next(dst);
        return dst;
    }

    /** Fills {@code dst} (row-major [B, S+1], exactly that long) with the next batch. */
    public void next(int[] dst) {
        if (dst.length != batch * (seqLen + 1)) {
            throw new IllegalArgumentException("dst holds " + dst.length + " ints; a [" + batch + ", " + (seqLen + 1) + "] batch needs " + batch * (seqLen + 1));
        }
        int w = seqLen + 1;
        for (int b = 0; b < batch; b++) {
            split.copy(nextWindowStart(), window, 0, w);
            for (int t = 0; t < w; t++) {
                dst[b * w + t] = window[t] & 0xFF;
            }
        }
    }

    /** Writes the next batch into {@code dst}: row-major [B, S+1] int32 in native byte order, at least that large. */
    public void next(MemorySegment dst) {
        long need = (long) batch * (seqLen + 1) * Integer.BYTES;
        if (dst.byteSize() < need) {
            throw new IllegalArgumentException("dst has " + dst.byteSize() + " bytes; a [" + batch + ", " + (seqLen + 1) + "] int32 batch needs " + need);
        }
        int[] rows = next();
        MemorySegment.copy(rows, 0, dst, ValueLayout.JAVA_INT_UNALIGNED, 0, rows.length);
    }

    /**
     * Writes the next batch split into model inputs and next-byte targets, both row-major [B, S] int32
     * in native byte order: tokens[b, s] = window[b][s], targets[b, s] = window[b][s + 1]. The same
     * windows as {@link #next()} would return; nothing is allocated per call, so a trainer can fill
     * pinned or host tensors' {@link io.hspmn.Tensor#segment()} views directly.
     */
    public void next(MemorySegment tokens, MemorySegment targets) {
        next(tokens, targets, 0, batch);
    }

    /**
     * {@link #next(MemorySegment, MemorySegment)} for one rank of a data-parallel run: draws the whole
     * (global) batch, so the position moves as it would for one rank, and writes only its rows
     * {@code [first, first + rows)}, as row-major [rows, S]. Rank r of N with B rows each passes
     * {@code (r * B, B)} to a sampler of batch N * B: together the ranks see exactly the batch one rank
     * of batch N * B would.
     */
    public void next(MemorySegment tokens, MemorySegment targets, int first, int rows) {
        if (first < 0 || rows < 0 || first > batch - rows) {
            throw new IllegalArgumentException("rows [" + first + ", " + first + "+" + rows + ") of a batch of " + batch);
        }
        long need = (long) rows * seqLen * Integer.BYTES;
        if (tokens.byteSize() < need || targets.byteSize() < need) {
            throw new IllegalArgumentException("tokens/targets have " + tokens.byteSize() + "/" + targets.byteSize()
                    + " bytes; a [" + rows + ", " + seqLen + "] int32 batch needs " + need);
        }
        int w = seqLen + 1;
        for (int b = 0; b < batch; b++) {
            long start = nextWindowStart();
            if (b < first || b >= first + rows) {
                continue;
            }
            split.copy(start, window, 0, w);
            long row = (long) (b - first) * seqLen * Integer.BYTES;
            for (int t = 0; t < seqLen; t++) {
                tokens.set(ValueLayout.JAVA_INT_UNALIGNED, row + 4L * t, window[t] & 0xFF);
                targets.set(ValueLayout.JAVA_INT_UNALIGNED, row + 4L * t, window[t + 1] & 0xFF);
            }
        }
    }

    /** Copies the next batch into an i32 tensor of shape [B, S+1] (any memory kind). */
    public void next(Tensor dst) {
        long[] want = {batch, seqLen + 1};
        if (dst.dtype() != DType.I32 || !Arrays.equals(dst.shape(), want)) {
            throw new IllegalArgumentException("dst is " + dst + "; need an i32 tensor of shape " + Arrays.toString(want));
        }
        dst.copyFrom(next());
    }

    /** The position after the last batch drawn. */
    public SamplerState state() {
        return new SamplerState(seed, shuffled, batch, seqLen, split.size(), epoch, index);
    }

    /**
     * Continues from {@code s}, taken by {@link #state()} of a sampler built the same way over the
     * same split; any other state is refused, naming what differs.
     */
    public void restore(SamplerState s) {
        Objects.requireNonNull(s, "state");
        SamplerState mine = state();
        if (s.seed() != seed || s.shuffled() != shuffled || s.batchSize() != batch || s.seqLen() != seqLen || s.splitBytes() != split.size()) {
            throw new IllegalArgumentException("sampler state " + s + " was taken from a different sampler or split than this one " + mine);
        }
        if (s.epoch() < 0 || s.index() < 0 || s.index() >= windowsInEpoch(s.epoch())) {
            throw new IllegalArgumentException("sampler state " + s + " is past the " + windowsInEpoch(Math.max(0, s.epoch())) + " windows of its epoch");
        }
        epoch = s.epoch();
        index = s.index();
    }

    /** Back to the start (epoch 0, index 0): a validation pass sees the same batches every time. */
    public void reset() {
        epoch = 0;
        index = 0;
    }
}
