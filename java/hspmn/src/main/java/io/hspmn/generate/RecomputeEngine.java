package io.hspmn.generate;

import io.hspmn.Context;
import io.hspmn.DType;
import io.hspmn.LanguageModel;
import io.hspmn.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Objects;

/**
 * A {@link DecodeEngine} without a cache: every step reruns {@code hspmn_model_logits} over each sequence's
 * whole prefix and keeps the last position's logits. Correct for either routing mode (it is exactly the
 * model's full forward on each prefix) but slow: a step costs a full forward of every prefix, so
 * generating n tokens costs O(n^2) token-forwards. {@link CachedEngine} replaces it wherever it can
 * (threshold routing); this engine remains for top-k routing, whose choices depend on the whole sequence
 * and so cannot be cached, and as the reference the cached engine is tested against.
 *
 * <p>Sequences of equal length share one native call; sequences of different lengths cannot (the model has
 * no padding mask, and left padding would change the causal conv and attention), so a step makes one call
 * per distinct length. Token histories live off-heap; logits are copied from the native output into one
 * off-heap [count, V] buffer.
 */
public final class RecomputeEngine implements DecodeEngine {
    private static final class Seq extends SequenceState {
        MemorySegment ids; // i32 [capacity]

        /** Room for `need` ids: at least doubled when it grows, never past maxLength. */
        void reserve(long need, int maxLength) {
            if (4L * need > ids.byteSize()) {
                MemorySegment grown = Arena.ofAuto().allocate(4L * Math.min(maxLength, Math.max(need + 64, 2L * ids.byteSize() / 4)), 4);
                MemorySegment.copy(ids, 0, grown, 0, 4L * length);
                ids = grown;
            }
        }
    }

    private final LanguageModel lm;
    private final Context ctx;
    private final boolean ownsModel;
    private final int maxLength;
    private final int vocab;
    private final long rowBytes;
    private final Arena arena = Arena.ofShared();
    private MemorySegment out;          // f32 [capacity rows, V]
    private int[] order = new int[16];  // step scratch: indices sorted by length
    private int live;

    /**
     * @param lm        the model; used from the engine's thread only
     * @param maxLength longest sequence (prompt plus generated) this engine accepts
     * @param ownsModel whether {@link #close()} closes {@code lm} and its context
     */
    public RecomputeEngine(LanguageModel lm, int maxLength, boolean ownsModel) {
        this.lm = Objects.requireNonNull(lm, "lm");
        this.ctx = lm.context();
        if (maxLength < 1) {
            throw new IllegalArgumentException("maxLength must be >= 1, got " + maxLength);
        }
        this.maxLength = maxLength;
        this.ownsModel = ownsModel;
        this.vocab = lm.config().vocabSize();
        this.rowBytes = 4L * vocab;
        this.out = arena.allocate(rowBytes * 8, 64);
    }

    @Override
    public int vocabSize() {
        return vocab;
    }

    @Override
    public int numLayers() {
        return lm.config().numLayers();
    }

    @Override
    public int maxLength() {
        return maxLength;
    }

    /** Sequences prefilled and not yet released. */
    public int liveSequences() {
        return live;
    }

    @Override
    public Sequence open() {
        Seq s = new Seq();
        s.ids = Arena.ofAuto().allocate(4L * Math.min(maxLength, 64), 4);
        live++;
        return s;
    }

    /** {@inheritDoc} The ids are only stored; the forward over the whole prefix runs when logits are wanted. */
    @Override
    public MemorySegment extend(Sequence sequence, MemorySegment ids, int count, boolean wantLogits) {
        Seq s = (Seq) sequence;
        s.checkExtend(count, maxLength);
        int length = s.length + count;
        s.reserve(length, maxLength);
        MemorySegment.copy(ids, 0, s.ids, 4L * s.length, 4L * count);
        if (!wantLogits) {
            s.length = length;
            return null;
        }
        ensureOut(1);
        runGroup(new Seq[] {s}, new int[] {0}, 0, 1, length);
        s.length = length;
        return out.asSlice(0, rowBytes);
    }

    @Override
    public MemorySegment step(Sequence[] sequences, int count, MemorySegment nextIds) {
        if (count < 1 || count > sequences.length) {
            throw new IllegalArgumentException("count " + count + " must be in [1, " + sequences.length + "]");
        }
        Seq[] seqs = new Seq[count];
        for (int i = 0; i < count; i++) {
            Seq s = (Seq) sequences[i];
            s.checkStep(i, maxLength);
            seqs[i] = s;
        }
        for (int i = 0; i < count; i++) {
            Seq s = seqs[i];
            s.reserve(s.length + 1, maxLength);
            s.ids.setAtIndex(ValueLayout.JAVA_INT, s.length, nextIds.getAtIndex(ValueLayout.JAVA_INT, i));
            s.length++;
        }
        try {
            ensureOut(count);
            if (order.length < count) {
                order = new int[Math.max(count, 2 * order.length)];
            }
            for (int i = 0; i < count; i++) {
                order[i] = i;
            }
            // insertion sort by length: batches are small
            for (int i = 1; i < count; i++) {
                int v = order[i];
                int j = i - 1;
                while (j >= 0 && seqs[order[j]].length > seqs[v].length) {
                    order[j + 1] = order[j];
                    j--;
                }
                order[j + 1] = v;
            }
            int start = 0;
            while (start < count) {
                int len = seqs[order[start]].length;
                int end = start + 1;
                while (end < count && seqs[order[end]].length == len) {
                    end++;
                }
                runGroup(seqs, order, start, end, len);
                start = end;
            }
        } catch (RuntimeException e) {
            for (Seq s : seqs) {
                s.length--;
            }
            throw e;
        }
        return out.asSlice(0, rowBytes * count);
    }

    /** One native call for seqs[order[start..end)], all of length len; row k of the output is seqs' index order[k]. */
    private void runGroup(Seq[] seqs, int[] order, int start, int end, int len) {
        int g = end - start;
        try (Tensor tokens = Models.pinned(ctx, DType.I32, g, len); Tensor logits = Models.pinned(ctx, DType.F32, g, vocab)) {
            MemorySegment t = tokens.segment();
            for (int k = 0; k < g; k++) {
                MemorySegment.copy(seqs[order[start + k]].ids, 0, t, 4L * len * k, 4L * len);
            }
            lm.logits(tokens, logits);
            MemorySegment l = logits.segment();
            for (int k = 0; k < g; k++) {
                MemorySegment.copy(l, rowBytes * k, out, rowBytes * order[start + k], rowBytes);
            }
        }
    }

    private void ensureOut(int rows) {
        if (out.byteSize() < rowBytes * rows) {
            out = arena.allocate(rowBytes * Math.max(rows, 2 * out.byteSize() / rowBytes), 64);
        }
    }

    @Override
    public void release(Sequence sequence) {
        Seq s = (Seq) sequence;
        if (!s.released) {
            s.released = true;
            s.ids = MemorySegment.NULL;
            live--;
        }
    }

    /** The full forward's report; which positions each layer selected is not known here (null). */
    @Override
    public ForwardReport forwardReport(MemorySegment ids, int count) {
        if (count < 1 || count > maxLength) {
            throw new IllegalArgumentException("length " + count + " must be in [1, " + maxLength + "]");
        }
        return Models.fullForward(lm, ids, count, null);
    }

    @Override
    public void close() {
        if (arena.scope().isAlive()) {
            arena.close();
            if (ownsModel) {
                Models.closeWithContext(lm);
            }
        }
    }
}
