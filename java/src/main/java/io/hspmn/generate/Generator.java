package io.hspmn.generate;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;

/**
 * The decode loop over one {@link DecodeEngine}: holds the sequences in flight and advances all of them by
 * one token per {@link #step()}: one engine call for the whole batch, then for each sequence a sample, its
 * stop conditions and the publication of its token. Sequences join ({@link #start}, {@link #score}) and
 * leave (finished, cancelled, failed) between steps; a finished sequence never waits for the others.
 *
 * <p>Single-threaded, like the engine it drives: call it from one thread at a time. {@link Engine} is the
 * thread-safe front that runs a Generator on a worker thread of its own. The hot path ({@link #step()})
 * allocates nothing of its own: next-token ids go to the engine in an off-heap i32 segment, the samplers
 * read the logits straight from the engine's off-heap output.
 */
public final class Generator implements AutoCloseable {
    private final DecodeEngine engine;
    private final int maxBatch;
    private final int vocab;
    private final long rowBytes;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment nextIds;        // i32 [maxBatch]
    private MemorySegment promptIds;            // i32 prompt staging for prefill
    private final Slot[] slots;
    private final DecodeEngine.Sequence[] seqs;
    private final boolean[] finished;
    private int active;
    private boolean closed;

    private volatile long steps;
    private volatile long stepSequences;
    private volatile long prefills;

    /**
     * @param engine   the model; this generator does not close it
     * @param maxBatch the most sequences in flight at once (one engine step carries them all)
     */
    public Generator(DecodeEngine engine, int maxBatch) {
        this.engine = Objects.requireNonNull(engine, "engine");
        if (maxBatch < 1) {
            throw new IllegalArgumentException("maxBatch must be >= 1, got " + maxBatch);
        }
        this.maxBatch = maxBatch;
        this.vocab = engine.vocabSize();
        this.rowBytes = 4L * vocab;
        this.nextIds = arena.allocate(4L * maxBatch, 64);
        this.promptIds = arena.allocate(4L * 256, 64);
        this.slots = new Slot[maxBatch];
        this.seqs = new DecodeEngine.Sequence[maxBatch];
        this.finished = new boolean[maxBatch];
    }

    public DecodeEngine engine() {
        return engine;
    }

    public int maxBatch() {
        return maxBatch;
    }

    /** Sequences in flight. */
    public int active() {
        return active;
    }

    public boolean isFull() {
        return active >= maxBatch;
    }

    /** Decode steps run so far. */
    public long steps() {
        return steps;
    }

    /** Sum over steps of the sequences each carried (steps() divides it into the mean batch). */
    public long stepSequences() {
        return stepSequences;
    }

    public long prefills() {
        return prefills;
    }

    /**
     * Starts a generation now: prefills its prompt and decides its first token (the listener, if any, hears
     * it before this returns). It then advances with every {@link #step()}.
     *
     * @throws IllegalStateException    when {@link #isFull()}
     * @throws IllegalArgumentException when the prompt does not fit the engine (ids, length)
     */
    public GenerationSession start(GenerationRequest request, GenerationListener listener) {
        checkFits(request.maxPromptId(), request.promptLength());
        GenerationSession s = new GenerationSession(request, listener);
        admit(s.slot);
        return s;
    }

    /** Starts scoring a text (see {@link ScoreResult}); it advances with every {@link #step()}. */
    public CompletableFuture<ScoreResult> score(int[] ids) {
        ScoreJob job = new ScoreJob(ids);
        checkFits(job.maxId(), job.length());
        admit(job);
        return job.future;
    }

    void checkFits(int maxId, int length) {
        if (maxId >= vocab) {
            throw new IllegalArgumentException("token id " + maxId + " is outside the model's vocabulary of " + vocab);
        }
        if (length > engine.maxLength()) {
            throw new IllegalArgumentException(length + " tokens, but the engine holds at most " + engine.maxLength());
        }
    }

    /** Prefills a slot and takes its first logits; the slot joins the batch unless it is already done. */
    void admit(Slot slot) {
        if (closed) {
            throw new IllegalStateException("the generator is closed");
        }
        if (active >= maxBatch) {
            throw new IllegalStateException("the batch is full (" + maxBatch + " sequences)");
        }
        if (slot.cancelRequested()) {
            slot.finishCancelled();
            return;
        }
        slot.started();
        int n = slot.prefillLength();
        if (promptIds.byteSize() < 4L * n) {
            promptIds = arena.allocate(4L * Math.max(n, 2 * promptIds.byteSize() / 4), 64);
        }
        for (int i = 0; i < n; i++) {
            promptIds.setAtIndex(ValueLayout.JAVA_INT, i, slot.promptAt(i));
        }
        if (slot instanceof GenerationSession.GenSlot g) {
            g.init(vocab);
        }
        boolean more;
        try {
            DecodeEngine.Prefill p = engine.prefill(promptIds, n);
            prefills++;
            slot.sequence = p.sequence();
            more = slot.accept(p.logits(), 0, vocab, n, engine.maxLength());
        } catch (RuntimeException e) {
            release(slot);
            slot.finishFailed(e);
            return;
        }
        if (more) {
            slots[active++] = slot;
        } else {
            release(slot);
            completeQuietly(slot);
        }
    }

    /**
     * One decode step for every sequence in flight: cancelled ones leave first, the rest get one token each.
     *
     * @return whether sequences remain in flight
     */
    public boolean step() {
        dropCancelled();
        int n = active;
        if (n == 0) {
            return false;
        }
        for (int i = 0; i < n; i++) {
            Slot s = slots[i];
            nextIds.setAtIndex(ValueLayout.JAVA_INT, i, s.next);
            seqs[i] = s.sequence;
        }
        MemorySegment logits;
        try {
            logits = engine.step(seqs, n, nextIds);
        } catch (RuntimeException e) {
            // the engine could not advance the batch: every sequence in it fails, the loop goes on
            for (int i = 0; i < n; i++) {
                release(slots[i]);
                slots[i].finishFailed(e);
                slots[i] = null;
                seqs[i] = null;
            }
            active = 0;
            return false;
        }
        steps++;
        stepSequences += n;
        int maxLength = engine.maxLength();
        boolean anyFinished = false;
        for (int i = 0; i < n; i++) {
            Slot s = slots[i];
            boolean more;
            try {
                more = s.accept(logits, rowBytes * i, vocab, s.sequence.length(), maxLength);
            } catch (RuntimeException e) {
                release(s);
                s.finishFailed(e);
                slots[i] = null;
                anyFinished = true;
                continue;
            }
            if (!more) {
                finished[i] = true;
                anyFinished = true;
            }
        }
        if (anyFinished) {
            // the step's logits are dead from here: completions may call the engine again
            int w = 0;
            for (int i = 0; i < n; i++) {
                Slot s = slots[i];
                if (s != null && finished[i]) {
                    finished[i] = false;
                    release(s);
                    completeQuietly(s);
                } else if (s != null) {
                    slots[w++] = s;
                }
            }
            for (int i = w; i < n; i++) {
                slots[i] = null;
                seqs[i] = null;
            }
            active = w;
        }
        return active > 0;
    }

    /** Steps until no sequence is in flight. */
    public void runUntilIdle() {
        while (step()) {
            // each step publishes its tokens
        }
    }

    private void dropCancelled() {
        int w = 0;
        int n = active;
        for (int i = 0; i < n; i++) {
            Slot s = slots[i];
            if (s.cancelRequested()) {
                release(s);
                s.finishCancelled();
            } else {
                slots[w++] = s;
            }
        }
        for (int i = w; i < n; i++) {
            slots[i] = null;
            seqs[i] = null;
        }
        active = w;
    }

    private void release(Slot s) {
        if (s.sequence != null) {
            DecodeEngine.Sequence q = s.sequence;
            s.sequence = null;
            try {
                engine.release(q);
            } catch (RuntimeException ignored) {
                // releasing is best effort; the slot's own outcome is what the caller hears about
            }
        }
    }

    private void completeQuietly(Slot s) {
        s.finishComplete(engine);
    }

    /** Cancels every sequence in flight (they end with {@link FinishReason#CANCELLED}). */
    public void cancelAll() {
        for (int i = 0; i < active; i++) {
            release(slots[i]);
            slots[i].finishCancelled();
            slots[i] = null;
            seqs[i] = null;
        }
        active = 0;
    }

    /** Cancels what is in flight and frees the generator's buffers; the engine stays open. */
    @Override
    public void close() {
        if (!closed) {
            cancelAll();
            closed = true;
            arena.close();
        }
    }
}
