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

    /** The normal end, after the step whose logits ended it (those logits are no longer valid). */
    abstract void complete(DecodeEngine engine);

    /** Cancelled before or between steps. */
    abstract void cancelled();

    abstract void fail(Throwable t);
}
