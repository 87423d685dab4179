package io.hspmn.generate;

import java.lang.foreign.MemorySegment;

/**
 * The model side of decoding: starts sequences from a prompt and advances many of them by one token at a
 * time, handing back next-token logits. Everything above it (sampling, stop conditions, batching,
 * threads, the HTTP service) is written against this interface, so engines can be swapped:
 * {@link CachedEngine} decodes on the native K/V cache (one-token steps, MODEL.md "Decoding with a cache",
 * threshold routing); {@link RecomputeEngine} reruns the whole prefix each step (any routing, slow).
 *
 * <p>Token ids go in and logits come out as off-heap memory: ids as i32 {@link MemorySegment}s, logits as
 * f32 rows of length {@link #vocabSize()} in a segment the engine owns (zero-copy where the engine can
 * hand out the native output itself), valid until the engine's next call. An engine that samples on its
 * own side ({@link #samplesTokens()}, the cached engine: sampling on the device) hands back token ids
 * instead, and logits only for sequences that need them.
 *
 * <p>Not thread-safe: an engine, like the native context under it, is used by one thread at a time
 * ({@link Engine} gives it a worker thread of its own).
 */
public interface DecodeEngine extends AutoCloseable {

    /** A sequence the engine holds state for (its tokens, or its cache). Opaque to callers. */
    interface Sequence {
        /** Tokens the sequence holds: prompt plus every token stepped in. */
        int length();
    }

    /**
     * A base for an engine's sequences: the length and released flag every engine keeps, and the checks it
     * makes of them before extending or stepping a sequence, so that every engine refuses alike.
     */
    abstract class SequenceState implements Sequence {
        protected int length;
        protected boolean released;

        @Override
        public int length() {
            return length;
        }

        /** Refuses appending count tokens: the sequence was released, or the piece is empty or too long. */
        protected void checkExtend(int count, int maxLength) {
            if (released) {
                throw new IllegalStateException("the sequence was released");
            }
            if (count < 1 || length + (long) count > maxLength) {
                throw new IllegalArgumentException("prompt length " + (length + (long) count) + " must be in [1, " + maxLength
                        + "] (" + count + " more after " + length + ")");
            }
        }

        /** Refuses stepping this sequence, the step's i-th: it was released, or it is full. */
        protected void checkStep(int i, int maxLength) {
            if (released) {
                throw new IllegalStateException("sequence " + i + " was released");
            }
            if (length >= maxLength) {
                throw new IllegalStateException("sequence " + i + " is at the maximum length " + maxLength);
            }
        }
    }

    /** A new sequence and the logits that follow its prompt. */
    record Prefill(Sequence sequence, MemorySegment logits) {
    }

    int vocabSize();

    int numLayers();

    /** The longest a sequence may grow (prompt plus generated tokens). */
    int maxLength();

    /**
     * Starts a sequence from a prompt in one call: {@link #open()} and one {@link #extend} over the whole
     * prompt.
     *
     * @param ids   i32 token ids in [0, V), at least {@code count} of them
     * @param count the prompt length, 1..{@link #maxLength()}
     * @return the sequence and the logits [V] f32 of its last prompt position (valid until the next call)
     * @throws IllegalStateException when the engine holds as many sequences as it can
     */
    default Prefill prefill(MemorySegment ids, int count) {
        if (count < 1 || count > maxLength()) {
            throw new IllegalArgumentException("prompt length " + count + " must be in [1, " + maxLength() + "]");
        }
        Sequence s = open();
        try {
            return new Prefill(s, extend(s, ids, count, true));
        } catch (RuntimeException e) {
            release(s);
            throw e;
        }
    }

    /**
     * Starts an empty sequence whose prompt then arrives in pieces through {@link #extend} (a chunked
     * prefill: {@link Generator} runs decode steps of the other sequences between the pieces).
     *
     * @throws IllegalStateException when the engine holds as many sequences as it can
     */
    Sequence open();

    /**
     * Appends {@code count} prompt ids to a sequence, before its first {@link #step}: one piece of a
     * chunked prefill. Only the last piece needs logits; an engine may skip the output head for the others.
     *
     * @param ids        i32 token ids in [0, V), at least {@code count} of them
     * @param count      1 or more; the sequence's length plus count is at most {@link #maxLength()}
     * @param wantLogits whether to compute the logits after the last id
     * @return the logits [V] f32 after the last id (valid until the next call), or null when not wanted
     * @throws IllegalArgumentException when the ids do not fit; nothing is appended then. After any other
     *                                  failure the sequence cannot go on: release it.
     */
    MemorySegment extend(Sequence sequence, MemorySegment ids, int count, boolean wantLogits);

    /**
     * Appends {@code nextIds[i]} to {@code sequences[i]} for every i below {@code count} and returns the
     * logits that follow each: row i of the result ([count, V] f32, valid until the next call) belongs to
     * {@code sequences[i]}. Sequences of different lengths may share a step; which sequences take part may
     * change from one step to the next. On failure no sequence has grown.
     */
    MemorySegment step(Sequence[] sequences, int count, MemorySegment nextIds);

    /**
     * Whether the engine samples next tokens itself ({@link #stepSampled}): then a step returns token ids
     * and logits cross only when someone needs them.
     */
    default boolean samplesTokens() {
        return false;
    }

    /**
     * A step whose next tokens the engine samples: appends {@code nextIds[i]} to {@code sequences[i]} and
     * writes to {@code sampled[i]} the token drawn from the logits after it under {@code params[i]} (an
     * {@code hspmn_sampling_params} per sequence, see {@link io.hspmn.StepArrays#write}; the definition is
     * {@link Sampler}'s). A sequence whose logits were not finite gets a negative id (-1 NaN, -2 +Infinity,
     * -3 every logit -Infinity) and cannot go on: release it. On any other failure no sequence has grown.
     *
     * @param wantLogits whether to hand back the logits too
     * @return the logits [count, V] f32 (valid until the next call) when wanted, else null
     * @throws UnsupportedOperationException unless {@link #samplesTokens()}
     */
    default MemorySegment stepSampled(Sequence[] sequences, int count, MemorySegment nextIds, MemorySegment params,
                                      MemorySegment sampled, boolean wantLogits) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " does not sample");
    }

    /** Frees what the engine holds for a sequence. The sequence may not be used again. Idempotent. */
    void release(Sequence sequence);

    /**
     * A full inference forward over {@code count} ids for what the model reports beside logits: the mean
     * next-token cross-entropy (NaN when count is 1) and each layer's routing.
     */
    ForwardReport forwardReport(MemorySegment ids, int count);

    /** Releases every sequence still held and, if the engine owns it, the model. */
    @Override
    void close();
}
