package io.hspmn;

import io.hspmn.ffi.hspmn_h;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Objects;

/**
 * Cached decoding of a {@link LanguageModel} ({@code hspmn_decoder}, MODEL.md "Decoding with a cache"):
 * per layer and slot the K and V of every token seen and the conv's last inputs, so appending a token
 * costs one token's work, and a token the router skips costs no attention at all.
 *
 * <p>Up to {@link #maxSeqs()} independent sequences ("slots") decode together: {@link #append} feeds
 * each named slot its next tokens (a prompt for a prefill, one token for a step) in one call, and slots
 * of different lengths join and leave between calls ({@link #reset}). In {@code threshold} routing the
 * logits equal {@link LanguageModel#logits} on each slot's whole sequence (bit for bit on the CPU
 * backend). {@link #append(Tensor, Tensor, Tensor, Tensor)} works on tensors the caller keeps: slot and
 * token ids are written into them and logits read from them without heap copies (use
 * {@link MemoryKind#PINNED} tensors on the CUDA backend). The decode hot path is {@link #step}: one token
 * per slot with the next token sampled natively, only ids crossing (replayed as a CUDA graph after
 * {@link #capture}).
 *
 * <p>Belongs to its model's {@link Context} and follows its one-thread-at-a-time rule; close it before
 * the model (closing the context closes it first). Closing it frees the caches.
 */
public final class Decoder extends NativeHandle {
    private final LanguageModel model;
    private final int maxSeqs;
    private final long maxLen;

    private Decoder(LanguageModel model, MemorySegment handle, int maxSeqs, long maxLen) {
        super(model.context(), handle, "hspmn_decoder_destroy", hspmn_h::hspmn_decoder_destroy);
        this.model = model;
        this.maxSeqs = maxSeqs;
        this.maxLen = maxLen;
    }

    static Decoder create(LanguageModel model, int maxSeqs, long maxLen) {
        Objects.requireNonNull(model, "model");
        Context ctx = model.context();
        try (var g = ctx.enter("Decoder.create")) {
            MemorySegment mh = model.handle("Decoder.create");
            return ctx.adopt(hspmn_h.hspmn_decoder_create(mh, maxSeqs, maxLen, ctx.pointerOut), "hspmn_decoder_create",
                    h -> new Decoder(model, h, maxSeqs, maxLen));
        }
    }

    public LanguageModel model() {
        return model;
    }

    public int maxSeqs() {
        return maxSeqs;
    }

    public long maxLen() {
        return maxLen;
    }

    /** Tokens the slot holds. */
    public long length(int slot) {
        try (var g = ctx.enter("Decoder.length")) {
            Native.check(hspmn_h.hspmn_decoder_length(handle("Decoder.length"), slot, ctx.longOut), "hspmn_decoder_length");
            return ctx.longOut.get(ValueLayout.JAVA_LONG, 0);
        }
    }

    /** Empties a slot so a new sequence can use it. */
    public void reset(int slot) {
        try (var g = ctx.enter("Decoder.reset")) {
            Native.check(hspmn_h.hspmn_decoder_reset(handle("Decoder.reset"), slot), "hspmn_decoder_reset");
        }
    }

    /**
     * Appends {@code tokens[j, :]} to slot {@code slots[j]} for every j and writes the next-token logits
     * after each slot's last token.
     *
     * @param slots  [n] i32, distinct slots
     * @param tokens [n, T] i32 token ids
     * @param logits [n, V] f32, or null
     * @param routed [n, T, L] i32 (1 where layer l routed the token), or null
     * @throws InvalidArgumentException for a bad slot, a token id out of range or a slot that would
     *                                  exceed {@link #maxLen()}; nothing is appended then. A failure
     *                                  inside the computation resets the call's slots (the message says so).
     */
    public void append(Tensor slots, Tensor tokens, Tensor logits, Tensor routed) {
        Objects.requireNonNull(slots, "slots");
        Objects.requireNonNull(tokens, "tokens");
        try (var g = ctx.enter("Decoder.append")) {
            slots.checkUsable(ctx, "slots");
            tokens.checkUsable(ctx, "tokens");
            Native.check(hspmn_h.hspmn_decoder_append(handle("Decoder.append"), slots.handle(), tokens.handle(),
                    Tensor.handleOrNull(logits, ctx, "logits"), Tensor.handleOrNull(routed, ctx, "routed")),
                    "hspmn_decoder_append");
        }
    }

    /** Appends {@code tokens} to one slot and returns the next-token logits (a convenience; allocates). */
    public float[] append(int slot, int... tokens) {
        try (var g = ctx.enter("Decoder.append");
             Tensor s = Tensor.ofInts(ctx, new int[] {slot}, 1);
             Tensor t = Tensor.ofInts(ctx, tokens, 1, tokens.length);
             Tensor out = Tensor.create(ctx, DType.F32, ctx.workMemory(), 1, model.config().vocabSize())) {
            append(s, t, out, null);
            return out.toFloatArray();
        }
    }

    /**
     * One decode step of {@code n} slots with the next token sampled by the backend
     * ({@code hspmn_decoder_step}): appends {@code tokens[j]} to slot {@code slots[j]} and writes to
     * {@code next[j]} the token sampled from the logits after it under {@code params[j]} (the native
     * definition of sampling, which {@link io.hspmn.generate.Sampler} shares bit for bit), so only ids
     * come back. With graphs captured ({@link #capture}) the step replays the graph of the smallest
     * captured batch size {@code >= n}. The arrays are off-heap memory the caller keeps, so a step
     * allocates nothing ({@link StepArrays} holds a set).
     *
     * @param slots  i32 [>= n], distinct slots, each holding fewer than {@link #maxLen()} tokens
     * @param tokens i32 [>= n] in [0, V)
     * @param params {@code hspmn_sampling_params} [>= n]
     * @param next   i32 [>= n], written
     * @param logits [n, V] f32 for a copy of the logits, or null (none is made)
     * @throws InvalidArgumentException  a bad slot, token or parameter, a full slot, or n above every
     *                                   captured batch size; nothing is appended then
     * @throws NonFiniteInputException  a slot's logits were not finite: that slot was reset (its next is
     *                                   negative: -1 NaN, -2 +Inf, -3 every logit -Inf); the others
     *                                   advanced and their next tokens are written
     */
    public void step(int n, MemorySegment slots, MemorySegment tokens, MemorySegment params, MemorySegment next,
                     Tensor logits) {
        if (n < 1 || n > maxSeqs) {
            throw new IllegalArgumentException("n (" + n + ") must be in [1, " + maxSeqs + "]");
        }
        checkArray(slots, 4L * n, "slots");
        checkArray(tokens, 4L * n, "tokens");
        checkArray(params, StepArrays.PARAMS_BYTES * n, "params");
        checkArray(next, 4L * n, "next");
        try (var g = ctx.enter("Decoder.step")) {
            Native.check(hspmn_h.hspmn_decoder_step(handle("Decoder.step"), n, slots, tokens, params, next,
                    Tensor.handleOrNull(logits, ctx, "logits")), "hspmn_decoder_step");
        }
    }

    /** {@link #step(int, MemorySegment, MemorySegment, MemorySegment, MemorySegment, Tensor)} on a set of arrays. */
    public void step(StepArrays arrays, int n) {
        if (n > arrays.capacity()) {
            throw new IllegalArgumentException("n (" + n + ") exceeds the arrays' capacity " + arrays.capacity());
        }
        step(n, arrays.slots(), arrays.tokens(), arrays.params(), arrays.next(), null);
    }

    private static void checkArray(MemorySegment a, long bytes, String name) {
        Objects.requireNonNull(a, name);
        if (!a.isNative()) {
            throw new IllegalArgumentException(name + " must be off-heap memory (a heap segment cannot cross to C)");
        }
        if (a.byteSize() < bytes) {
            throw new IllegalArgumentException(name + " holds " + a.byteSize() + " bytes; the step needs " + bytes);
        }
    }

    /**
     * Records the decode step for each batch size as one CUDA graph ({@code hspmn_decoder_capture}):
     * every layer, the head and the sampling; later steps of up to the largest size replay the graph of
     * the smallest size that holds them. Sizes in [1, min(32, {@link #maxSeqs()})]; replaces earlier
     * captures; slots are unchanged.
     *
     * @throws InvalidArgumentException on the CPU backend (no graphs) or for a size out of range
     */
    public void capture(int... batchSizes) {
        Objects.requireNonNull(batchSizes, "batchSizes");
        if (batchSizes.length == 0) {
            throw new IllegalArgumentException("give at least one batch size");
        }
        try (var g = ctx.enter("Decoder.capture"); var arena = java.lang.foreign.Arena.ofConfined()) {
            MemorySegment sizes = arena.allocateFrom(ValueLayout.JAVA_INT, batchSizes);
            Native.check(hspmn_h.hspmn_decoder_capture(handle("Decoder.capture"), sizes, batchSizes.length),
                    "hspmn_decoder_capture");
        }
    }

    @Override
    public String toString() {
        return "Decoder[" + maxSeqs + " slots x " + maxLen + (isClosed() ? ", closed" : "") + "]";
    }
}
