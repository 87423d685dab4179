package io.hspmn.generate;

import io.hspmn.Backend;
import io.hspmn.Context;
import io.hspmn.DType;
import io.hspmn.Decoder;
import io.hspmn.InvalidArgumentException;
import io.hspmn.LanguageModel;
import io.hspmn.NonFiniteInputException;
import io.hspmn.Routing;
import io.hspmn.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Objects;

/**
 * A {@link DecodeEngine} on the native cached decoder ({@link Decoder}, MODEL.md "Decoding with a cache"):
 * each sequence holds a decoder slot with its K/V and conv state, a prefill appends the prompt to it (at
 * once or in pieces: {@link #extend}) and a step appends one token per sequence, all sequences of the step
 * in one native call whatever their lengths. Needs threshold routing; its logits then equal the full forward's on each whole sequence (bit
 * for bit on the CPU backend).
 *
 * <p>Steps sample on the backend ({@link #stepSampled}, {@link Decoder#step}): the token ids go in and the
 * sampled ids come back through off-heap arrays the engine and the {@link Generator} keep, and logits
 * cross only for sequences that need them (log-probabilities, scoring). On the CUDA backend the engine
 * captures the step as CUDA graphs for batch sizes 1, 2, 4, ... up to min(32, maxSeqs) (see
 * {@link #capturedBatchSizes()}); a step of more sequences than the largest graph goes in parts.
 *
 * <p>Zero-copy: for each batch size the engine keeps PINNED tensors for the slot ids [n], the next tokens
 * [n, 1] and the logits [n, V]; a logits step ({@link #step}) writes the ids into their memory, calls the
 * decoder, and hands out the logits tensor's memory itself. The decoder has one slot more than the batch:
 * {@link #forwardReport} prefills the text there to read which positions each layer routed.
 */
public final class CachedEngine implements DecodeEngine {
    private static final class Seq extends SequenceState {
        final int slot;

        Seq(int slot) {
            this.slot = slot;
        }
    }

    /** The step tensors of one batch size, with their memory views. */
    private static final class Buffers implements AutoCloseable {
        final Tensor slots;
        final Tensor tokens;
        final Tensor logits;
        final MemorySegment slotIds;
        final MemorySegment tokenIds;
        final MemorySegment logitRows;

        Buffers(Context ctx, int n, int vocab) {
            Tensor s = null;
            Tensor t = null;
            Tensor l = null;
            try {
                s = Models.pinned(ctx, DType.I32, n);
                t = Models.pinned(ctx, DType.I32, n, 1);
                l = Models.pinned(ctx, DType.F32, n, vocab);
            } catch (RuntimeException e) {
                closeAll(s, t, l);
                throw e;
            }
            slots = s;
            tokens = t;
            logits = l;
            slotIds = s.segment();
            tokenIds = t.segment();
            logitRows = l.segment();
        }

        @Override
        public void close() {
            closeAll(slots, tokens, logits);
        }

        private static void closeAll(Tensor... ts) {
            for (Tensor x : ts) {
                if (x != null) {
                    x.close();
                }
            }
        }
    }

    private final LanguageModel lm;
    private final Context ctx;
    private final boolean ownsModel;
    private final int maxSeqs;
    private final int maxLength;
    private final int vocab;
    private final int layers;
    private final Decoder decoder;
    private final Buffers[] buffers; // by batch size - 1, made on first use
    private final int[] freeSlots;
    private int free;
    private final boolean[] dirty; // slots whose reset at release failed
    private Tensor chunkTokens; // [1, T] i32 prompt pieces of the largest size T seen
    private final Arena arena = Arena.ofShared();
    private final MemorySegment stepSlots; // i32 [maxSeqs]: slot ids of a sampled step
    private final int[] captured;          // batch sizes with a CUDA graph, ascending; empty without
    private final int partRows;            // the most rows one sampled step carries (the largest graph)
    private final String graphs;
    private boolean closed;

    /**
     * @param lm        a model with threshold routing; used from the engine's thread only
     * @param maxSeqs   sequences held at once (the Generator's batch)
     * @param maxLength longest sequence
     * @param ownsModel whether {@link #close()} closes {@code lm} and its context
     */
    public CachedEngine(LanguageModel lm, int maxSeqs, int maxLength, boolean ownsModel) {
        this.lm = Objects.requireNonNull(lm, "lm");
        if (lm.config().block().routing() != Routing.THRESHOLD) {
            throw new IllegalArgumentException("cached decoding needs threshold routing; this model routes "
                    + lm.config().block().routing().jsonName() + " (use RecomputeEngine)");
        }
        if (maxSeqs < 1 || maxLength < 1) {
            throw new IllegalArgumentException("maxSeqs and maxLength must be >= 1, got " + maxSeqs + ", " + maxLength);
        }
        this.ctx = lm.context();
        this.ownsModel = ownsModel;
        this.maxSeqs = maxSeqs;
        this.maxLength = maxLength;
        this.vocab = lm.config().vocabSize();
        this.layers = lm.config().numLayers();
        this.decoder = lm.decoder(maxSeqs + 1, maxLength);
        this.buffers = new Buffers[maxSeqs];
        this.freeSlots = new int[maxSeqs];
        for (int i = 0; i < maxSeqs; i++) {
            freeSlots[i] = maxSeqs - 1 - i;
        }
        this.free = maxSeqs;
        this.dirty = new boolean[maxSeqs + 1];
        this.stepSlots = arena.allocate(4L * maxSeqs, 64);
        String[] note = new String[1];
        this.captured = capture(decoder, ctx, maxSeqs, note);
        this.graphs = note[0];
        this.partRows = captured.length == 0 ? maxSeqs : captured[captured.length - 1];
    }

    @Override
    public int vocabSize() {
        return vocab;
    }

    @Override
    public int numLayers() {
        return layers;
    }

    @Override
    public int maxLength() {
        return maxLength;
    }

    /**
     * Graphs on CUDA for batch sizes 1, 2, 4, ..., min(32, maxSeqs) (the largest always), or none: on the
     * CPU backend, or where the decoder cannot capture (it says why; steps then run without graphs).
     */
    private static int[] capture(Decoder decoder, Context ctx, int maxSeqs, String[] note) {
        if (ctx.backend() != Backend.CUDA) {
            note[0] = "no CUDA graphs (" + ctx.backend() + " backend)";
            return new int[0];
        }
        int top = Math.min(32, maxSeqs);
        int[] sizes = new int[32 - Integer.numberOfLeadingZeros(top) + (Integer.bitCount(top) == 1 ? 0 : 1)];
        int k = 0;
        for (int b = 1; b <= top; b *= 2) {
            sizes[k++] = b;
        }
        if (sizes[k - 1] != top) {
            sizes[k++] = top;
        }
        try {
            decoder.capture(sizes);
        } catch (InvalidArgumentException e) {
            note[0] = "no CUDA graphs: " + e.getMessage();
            return new int[0];
        }
        note[0] = "CUDA graphs for batch sizes " + java.util.Arrays.toString(sizes);
        return sizes;
    }

    /** Whether decode steps replay CUDA graphs, and for which batch sizes (or why not). */
    public String graphs() {
        return graphs;
    }

    /** Batch sizes the decode step was captured for as CUDA graphs (empty: none). */
    public int[] capturedBatchSizes() {
        return captured.clone();
    }

    /** Sequences prefilled and not yet released. */
    public int liveSequences() {
        return maxSeqs - free;
    }

    private Buffers buffers(int n) {
        Buffers b = buffers[n - 1];
        if (b == null) {
            b = new Buffers(ctx, n, vocab);
            buffers[n - 1] = b;
        }
        return b;
    }

    @Override
    public Sequence open() {
        if (free == 0) {
            throw new IllegalStateException("all " + maxSeqs + " decoder slots are in use");
        }
        int slot = freeSlots[free - 1];
        if (dirty[slot]) {
            decoder.reset(slot); // its reset at release failed; a failure here leaves it free and dirty
            dirty[slot] = false;
        }
        free--;
        return new Seq(slot);
    }

    /**
     * {@inheritDoc} One native append of the piece to the sequence's slot; without logits the decoder
     * skips the final norm and the head. Pieces of the largest size seen reuse one PINNED token tensor.
     */
    @Override
    public MemorySegment extend(Sequence sequence, MemorySegment ids, int count, boolean wantLogits) {
        Seq s = (Seq) sequence;
        s.checkExtend(count, maxLength);
        Buffers b = buffers(1);
        Tensor tokens = chunkTokens;
        boolean own = false;
        if (tokens == null || tokens.shape(1) < count) {
            if (tokens != null) {
                chunkTokens = null;
                tokens.close();
            }
            tokens = Models.pinned(ctx, DType.I32, 1, count);
            chunkTokens = tokens;
        } else if (tokens.shape(1) != count) {
            tokens = Models.pinned(ctx, DType.I32, 1, count);
            own = true;
        }
        try {
            MemorySegment.copy(ids, 0, tokens.segment(), 0, 4L * count);
            b.slotIds.setAtIndex(ValueLayout.JAVA_INT, 0, s.slot);
            decoder.append(b.slots, tokens, wantLogits ? b.logits : null, null);
        } finally {
            if (own) {
                tokens.close();
            }
        }
        s.length += count;
        return wantLogits ? b.logitRows : null;
    }

    /**
     * {@inheritDoc} A bad argument (a token id out of range) appends nothing; a failure inside the native
     * computation resets the step's slots, so those sequences cannot go on (the Generator fails them).
     */
    @Override
    public MemorySegment step(Sequence[] sequences, int count, MemorySegment nextIds) {
        Buffers b = buffers(checkedCount(sequences, count));
        slotsOf(sequences, count, b.slotIds);
        MemorySegment.copy(nextIds, 0, b.tokenIds, 0, 4L * count);
        decoder.append(b.slots, b.tokens, b.logits, null);
        for (int i = 0; i < count; i++) {
            ((Seq) sequences[i]).length++;
        }
        return b.logitRows;
    }

    @Override
    public boolean samplesTokens() {
        return true;
    }

    /**
     * {@inheritDoc} One {@link Decoder#step} (or one per part of at most the largest captured batch size).
     * A slot whose logits were not finite was reset by the decoder; the others advanced.
     */
    @Override
    public MemorySegment stepSampled(Sequence[] sequences, int count, MemorySegment nextIds, MemorySegment params,
                                     MemorySegment sampled, boolean wantLogits) {
        slotsOf(sequences, checkedCount(sequences, count), stepSlots);
        Buffers b = wantLogits ? buffers(count) : null;
        for (int at = 0; at < count; at += partRows) {
            int n = Math.min(partRows, count - at);
            Tensor logits = null;
            if (wantLogits) {
                logits = n == count ? b.logits : buffers(n).logits;
            }
            try {
                decoder.step(n, at == 0 ? stepSlots : stepSlots.asSlice(4L * at), at == 0 ? nextIds : nextIds.asSlice(4L * at),
                        at == 0 ? params : params.asSlice(io.hspmn.StepArrays.PARAMS_BYTES * at),
                        at == 0 ? sampled : sampled.asSlice(4L * at), logits);
            } catch (NonFiniteInputException e) {
                // the part's ids are written; the bad slot's is negative and the decoder reset it
            }
            for (int i = at; i < at + n; i++) {
                ((Seq) sequences[i]).length++;
            }
            if (wantLogits && n != count) {
                MemorySegment.copy(buffers(n).logitRows, 0, b.logitRows, 4L * vocab * at, 4L * vocab * n);
            }
        }
        return wantLogits ? b.logitRows : null;
    }

    private int checkedCount(Sequence[] sequences, int count) {
        if (count < 1 || count > maxSeqs || count > sequences.length) {
            throw new IllegalArgumentException("count " + count + " must be in [1, " + Math.min(maxSeqs, sequences.length) + "]");
        }
        return count;
    }

    /** The decoder slots of a step's sequences into slotIds (i32 [count]), each checked first. */
    private void slotsOf(Sequence[] sequences, int count, MemorySegment slotIds) {
        for (int i = 0; i < count; i++) {
            Seq s = (Seq) sequences[i];
            s.checkStep(i, maxLength);
            slotIds.setAtIndex(ValueLayout.JAVA_INT, i, s.slot);
        }
    }

    @Override
    public void release(Sequence sequence) {
        Seq s = (Seq) sequence;
        if (!s.released) {
            s.released = true;
            resetQuietly(s.slot);
            freeSlots[free++] = s.slot;
        }
    }

    private void resetQuietly(int slot) {
        try {
            decoder.reset(slot);
        } catch (RuntimeException e) {
            dirty[slot] = true; // reset again before its next use
        }
    }

    /**
     * The full forward's report, with the positions each layer routed: the text is prefilled into the
     * decoder's spare slot, whose per-token routing equals the full forward's in threshold mode.
     */
    @Override
    public ForwardReport forwardReport(MemorySegment ids, int count) {
        if (count < 1 || count > maxLength) {
            throw new IllegalArgumentException("length " + count + " must be in [1, " + maxLength + "]");
        }
        int spare = maxSeqs;
        int[][] selected = new int[layers][];
        try (Tensor slot = Models.pinned(ctx, DType.I32, 1); Tensor tokens = Models.pinned(ctx, DType.I32, 1, count);
             Tensor routed = Models.pinned(ctx, DType.I32, 1, count, layers)) {
            slot.segment().setAtIndex(ValueLayout.JAVA_INT, 0, spare);
            MemorySegment.copy(ids, 0, tokens.segment(), 0, 4L * count);
            decoder.reset(spare);
            try {
                decoder.append(slot, tokens, null, routed);
            } finally {
                resetQuietly(spare);
            }
            MemorySegment r = routed.segment();
            for (int l = 0; l < layers; l++) {
                int n = 0;
                for (int t = 0; t < count; t++) {
                    n += r.getAtIndex(ValueLayout.JAVA_INT, (long) t * layers + l);
                }
                int[] pos = new int[n];
                int k = 0;
                for (int t = 0; t < count; t++) {
                    if (r.getAtIndex(ValueLayout.JAVA_INT, (long) t * layers + l) != 0) {
                        pos[k++] = t;
                    }
                }
                selected[l] = pos;
            }
        }
        return Models.fullForward(lm, ids, count, selected);
    }

    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        try {
            for (Buffers b : buffers) {
                if (b != null) {
                    b.close();
                }
            }
            if (chunkTokens != null) {
                chunkTokens.close();
            }
            arena.close();
            decoder.close();
        } finally {
            if (ownsModel) {
                Models.closeWithContext(lm);
            }
        }
    }
}
