package io.hspmn.generate;

import java.lang.foreign.MemorySegment;

/**
 * One sequence in the decode loop: a generation or a scoring pass. Everything here runs on the thread that
 * owns the {@link Generator}, except {@link #cancelRequested()}, which other threads set.
 */
abstract class Slot {
    /** The engine's state for this sequence; null before prefill and after release. */
    DecodeEngine.Sequence sequence;
    /** The token fed at the next step. */
    int next;
    /** Prompt tokens appended so far (a prefill may take several pieces). */
    int prefilled;

    /** The prompt (or the text to score) the sequence starts from. */
    abstract int promptLength();

    abstract int promptAt(int i);

    /** How many tokens the prefill takes from the prompt. */
    int prefillLength() {
        return promptLength();
    }

    abstract boolean cancelRequested();

    /** Called once, on the decode thread, just before the prefill. */
    void started() {
    }

    /**
     * Takes the logits that follow the sequence (row at {@code offset} of {@code logits}); returns true to go
     * on, with {@link #next} set, or false when the sequence is done.
     *
     * @param length    tokens the sequence holds now
     * @param maxLength the engine's limit: a sequence at it cannot be stepped again
     */
    abstract boolean accept(MemorySegment logits, long offset, int vocab, int length, int maxLength);

    /**
     * Whether the next token must be chosen from logits in Java ({@link #accept}); if not, an engine that
     * samples ({@link DecodeEngine#samplesTokens()}) may choose it under {@link #writeSampling}'s params.
     */
    boolean needsLogits() {
        return true;
    }

    /**
     * Writes the {@code hspmn_sampling_params} of the next token at {@code offset} of {@code params},
     * taking its draw of the random stream (so a call is a promise to {@link #acceptToken} the result).
     */
    void writeSampling(MemorySegment params, long offset) {
        throw new UnsupportedOperationException("this sequence needs logits");
    }

    /** As {@link #accept}, with the token the engine sampled under {@link #writeSampling}'s params. */
    boolean acceptToken(int token, int length, int maxLength) {
        throw new UnsupportedOperationException("this sequence needs logits");
    }

    /** Run once when the slot leaves the loop, before its outcome is published (the Engine counts with it). */
    private Runnable onLeave;
    private boolean left;

    void onLeave(Runnable r) {
        onLeave = r;
    }

    private boolean leave() {
        if (left) {
            return false;
        }
        left = true;
        if (onLeave != null) {
            onLeave.run();
        }
        return true;
    }

    /** The normal end, after the step whose logits ended it (those logits are no longer valid). */
    final void finishComplete(DecodeEngine engine) {
        if (leave()) {
            try {
                complete(engine);
            } catch (RuntimeException e) {
                fail(e);
            }
        }
    }

    /** Cancelled before or between steps. */
    final void finishCancelled() {
        if (leave()) {
            cancelled();
        }
    }

    final void finishFailed(Throwable t) {
        if (leave()) {
            fail(t);
        }
    }

    abstract void complete(DecodeEngine engine);

    abstract void cancelled();

    abstract void fail(Throwable t);
}
