package io.hspmn.generate;

import io.hspmn.StepArrays;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;

/**
 * The decode loop over one {@link DecodeEngine}: holds the sequences in flight and advances all of them by
 * one token per {@link #step()}: one engine call for the whole batch, then for each sequence a sample, its
 * stop conditions and the publication of its token. Sequences join ({@link #start}, {@link #score}) and
 * leave (finished, cancelled, failed) between steps; a finished sequence never waits for the others.
 *
 * <p>Continuous batching: a sequence admitted with {@link #enqueue} (as {@link Engine} does) is prefilled
 * by the following steps, in pieces: each step first appends at most {@link #prefillChunk()} prompt tokens
 * in all (of the queued prompts, in order of arrival; a prompt may take several steps) and then decodes one
 * token for every sequence already past its prompt. So a long prompt delays the running sequences by at
 * most one piece per token, and a sequence whose prompt is complete joins the batch in the same step.
 * {@link #start} instead prefills the whole prompt before it returns.
 *
 * <p>Single-threaded, like the engine it drives: call it from one thread at a time. {@link Engine} is the
 * thread-safe front that runs a Generator on a worker thread of its own. The hot path ({@link #step()})
 * allocates nothing of its own: next-token ids and sampling parameters go to the engine in off-heap
 * segments and sampled ids come back in one (an engine that samples, as the cached one does on the
 * device), or the samplers read the logits straight from the engine's off-heap output.
 */
public final class Generator implements AutoCloseable {
    private static final long PARAMS_BYTES = StepArrays.PARAMS_BYTES;

    /** Prompt tokens appended per step by default: a 32k prompt takes 16 steps. */
    public static final int DEFAULT_PREFILL_CHUNK = 2048;

    private final DecodeEngine engine;
    private final int maxBatch;
    private final int prefillChunk;
    private final int vocab;
    private final long rowBytes;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment nextIds;        // i32 [maxBatch]
    private final boolean sampling;             // the engine samples: params down, ids back
    private final MemorySegment params;         // hspmn_sampling_params [maxBatch]
    private final MemorySegment sampled;        // i32 [maxBatch]: the engine's tokens
    private MemorySegment promptIds;            // i32 prompt staging for prefill
    private final Slot[] slots;                 // decoding: [0, active)
    private final DecodeEngine.Sequence[] seqs;
    private final boolean[] finished;
    private final Slot[] prefilling;            // prompts still being appended, oldest first: [0, pending)
    private int active;
    private int pending;
    private boolean closed;

    private volatile long steps;
    private volatile long stepSequences;
    private volatile long prefills;
    private volatile long prefillPieces;

    /** A generator whose steps append at most {@link #DEFAULT_PREFILL_CHUNK} prompt tokens each. */
    public Generator(DecodeEngine engine, int maxBatch) {
        this(engine, maxBatch, DEFAULT_PREFILL_CHUNK);
    }

    /**
     * @param engine       the model; this generator does not close it
     * @param maxBatch     the most sequences in flight at once, prefilling ones included (one engine step
     *                     carries all that decode)
     * @param prefillChunk the most prompt tokens one step appends before its decode call, >= 1
     */
    public Generator(DecodeEngine engine, int maxBatch, int prefillChunk) {
        this.engine = Objects.requireNonNull(engine, "engine");
        if (maxBatch < 1) {
            throw new IllegalArgumentException("maxBatch must be >= 1, got " + maxBatch);
        }
        if (prefillChunk < 1) {
            throw new IllegalArgumentException("prefillChunk must be >= 1, got " + prefillChunk);
        }
        this.maxBatch = maxBatch;
        this.prefillChunk = prefillChunk;
        this.vocab = engine.vocabSize();
        this.rowBytes = 4L * vocab;
        this.nextIds = arena.allocate(4L * maxBatch, 64);
        this.sampling = engine.samplesTokens();
        this.params = arena.allocate(PARAMS_BYTES * maxBatch, 64);
        this.sampled = arena.allocate(4L * maxBatch, 64);
        this.promptIds = arena.allocate(4L * 256, 64);
        this.slots = new Slot[maxBatch];
        this.seqs = new DecodeEngine.Sequence[maxBatch];
        this.finished = new boolean[maxBatch];
        this.prefilling = new Slot[maxBatch];
    }

    public DecodeEngine engine() {
        return engine;
    }

    public int maxBatch() {
        return maxBatch;
    }

    public int prefillChunk() {
        return prefillChunk;
    }

    /** Sequences in flight: decoding, or queued for their prefill or in the middle of it. */
    public int active() {
        return active + pending;
    }

    /** Sequences whose prompt is not yet wholly appended. */
    public int prefilling() {
        return pending;
    }

    public boolean isFull() {
        return active + pending >= maxBatch;
    }

    /** Decode steps run so far. */
    public long steps() {
        return steps;
    }

    /** Sum over steps of the sequences each carried (steps() divides it into the mean batch). */
    public long stepSequences() {
        return stepSequences;
    }

    /** Prefills completed. */
    public long prefills() {
        return prefills;
    }

    /** Engine calls that appended a piece of a prompt (a prompt of n tokens takes ceil(n / chunk) or more). */
    public long prefillPieces() {
        return prefillPieces;
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

    private void checkRoom() {
        if (closed) {
            throw new IllegalStateException("the generator is closed");
        }
        if (isFull()) {
            throw new IllegalStateException("the batch is full (" + maxBatch + " sequences)");
        }
    }

    /** Prefills a slot now, in pieces of {@link #prefillChunk} with no step between them; it then joins the batch. */
    void admit(Slot slot) {
        checkRoom();
        if (slot.cancelRequested()) {
            slot.finishCancelled();
            return;
        }
        while (!piece(slot, prefillChunk)) {
            // the next piece
        }
    }

    /** Queues a slot for prefill by the following steps (see the class comment). */
    void enqueue(Slot slot) {
        checkRoom();
        prefilling[pending++] = slot;
    }

    /**
     * Appends up to {@code max} more prompt tokens of a slot (opening its sequence first); after the last
     * piece, takes its first logits, and the slot joins the batch unless that already ended it.
     *
     * @return whether the slot's prefill is over (it joined the batch, finished or failed)
     */
    private boolean piece(Slot slot, int max) {
        int n = slot.prefillLength();
        int from = slot.prefilled;
        int c = Math.min(max, n - from);
        boolean last = from + c == n;
        MemorySegment logits;
        try {
            if (slot.sequence == null) {
                slot.started();
                if (slot instanceof GenerationSession.GenSlot g) {
                    g.init(vocab);
                }
                slot.sequence = engine.open();
            }
            if (promptIds.byteSize() < 4L * c) {
                promptIds = arena.allocate(4L * Math.max(c, 2 * promptIds.byteSize() / 4), 64);
            }
            for (int i = 0; i < c; i++) {
                promptIds.setAtIndex(ValueLayout.JAVA_INT, i, slot.promptAt(from + i));
            }
            logits = engine.extend(slot.sequence, promptIds, c, last);
            prefillPieces++;
        } catch (RuntimeException e) {
            release(slot);
            slot.finishFailed(e);
            return true;
        }
        slot.prefilled = from + c;
        if (!last) {
            return false;
        }
        prefills++;
        boolean more;
        try {
            more = slot.accept(logits, 0, vocab, n, engine.maxLength());
        } catch (RuntimeException e) {
            release(slot);
            slot.finishFailed(e);
            return true;
        }
        if (more) {
            slots[active++] = slot;
        } else {
            release(slot);
            completeQuietly(slot);
        }
        return true;
    }

    /** Appends at most {@link #prefillChunk} prompt tokens of the queued prompts, oldest first. */
    private void appendPrompts() {
        int budget = prefillChunk;
        while (budget > 0 && pending > 0) {
            Slot s = prefilling[0];
            int c = Math.min(budget, s.prefillLength() - s.prefilled);
            budget -= c;
            if (piece(s, c)) {
                System.arraycopy(prefilling, 1, prefilling, 0, pending - 1);
                prefilling[--pending] = null;
            }
        }
    }

    /**
     * One step: cancelled sequences leave first, then up to {@link #prefillChunk} tokens of queued prompts
     * are appended, then every sequence past its prompt gets one token.
     *
     * @return whether sequences remain in flight
     */
    public boolean step() {
        dropCancelled();
        if (pending > 0) {
            appendPrompts();
        }
        if (active > 0) {
            decode();
        }
        return active + pending > 0;
    }

    /**
     * One engine step for every decoding sequence. With an engine that samples ({@link
     * DecodeEngine#samplesTokens()}) each sequence's sampling parameters go down with its token and only
     * ids come back; logits come too only if some sequence needs them (log-probabilities, scoring), and
     * those sequences choose from them here.
     */
    private void decode() {
        int n = active;
        boolean anyLogits = !sampling;
        for (int i = 0; i < n; i++) {
            Slot s = slots[i];
            nextIds.setAtIndex(ValueLayout.JAVA_INT, i, s.next);
            seqs[i] = s.sequence;
            if (sampling) {
                if (s.needsLogits()) {
                    anyLogits = true;
                    StepArrays.write(params, PARAMS_BYTES * i, 0f, 0, 1f, 0L, 1L); // its sample is not used
                } else {
                    s.writeSampling(params, PARAMS_BYTES * i);
                }
            }
        }
        MemorySegment logits;
        try {
            logits = sampling ? engine.stepSampled(seqs, n, nextIds, params, sampled, anyLogits) : engine.step(seqs, n, nextIds);
        } catch (RuntimeException e) {
            // the engine could not advance the batch: every sequence in it fails, the loop goes on
            for (int i = 0; i < n; i++) {
                release(slots[i]);
                slots[i].finishFailed(e);
                slots[i] = null;
                seqs[i] = null;
            }
            active = 0;
            return;
        }
        steps++;
        stepSequences += n;
        int maxLength = engine.maxLength();
        boolean anyFinished = false;
        for (int i = 0; i < n; i++) {
            Slot s = slots[i];
            boolean more;
            try {
                if (!sampling || s.needsLogits()) {
                    more = s.accept(logits, rowBytes * i, vocab, s.sequence.length(), maxLength);
                } else {
                    int t = sampled.getAtIndex(ValueLayout.JAVA_INT, i);
                    if (t < 0) {
                        throw new IllegalStateException(t == -1 ? "the logits hold NaN" : t == -2 ? "the logits hold +Infinity"
                                : "every logit is -Infinity");
                    }
                    more = s.acceptToken(t, s.sequence.length(), maxLength);
                }
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
    }

    /** Steps until no sequence is in flight. */
    public void runUntilIdle() {
        while (step()) {
            // each step publishes its tokens
        }
    }

    private void dropCancelled() {
        int n = active;
        active = dropCancelled(slots, n);
        Arrays.fill(seqs, active, n, null);
        pending = dropCancelled(prefilling, pending);
    }

    /** Finishes the cancelled slots of list[0, n) and moves the others to the front, in order; returns their count. */
    private int dropCancelled(Slot[] list, int n) {
        int w = 0;
        for (int i = 0; i < n; i++) {
            Slot s = list[i];
            if (s.cancelRequested()) {
                release(s);
                s.finishCancelled();
            } else {
                list[w++] = s;
            }
        }
        Arrays.fill(list, w, n, null);
        return w;
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
        for (int i = 0; i < pending; i++) {
            release(prefilling[i]);
            prefilling[i].finishCancelled();
            prefilling[i] = null;
        }
        pending = 0;
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
