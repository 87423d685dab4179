package io.hspmn;

import io.hspmn.ffi.hspmn_sampling_params;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * The off-heap arrays of {@link Decoder#step(StepArrays, int)} for up to {@link #capacity()} slots: slot ids,
 * tokens, {@code hspmn_sampling_params} and the next tokens the step writes. Allocated once; filling them
 * and stepping allocate nothing. Not thread-safe.
 */
public final class StepArrays implements AutoCloseable {
    /** Bytes of one {@code hspmn_sampling_params}. */
    public static final long PARAMS_BYTES = hspmn_sampling_params.layout().byteSize();

    private static final ValueLayout.OfFloat TEMPERATURE = hspmn_sampling_params.temperature$layout();
    private static final ValueLayout.OfInt TOP_K = hspmn_sampling_params.top_k$layout();
    private static final ValueLayout.OfFloat TOP_P = hspmn_sampling_params.top_p$layout();
    private static final ValueLayout.OfInt RESERVED = hspmn_sampling_params.reserved$layout();
    private static final ValueLayout.OfLong SEED = hspmn_sampling_params.seed$layout();
    private static final ValueLayout.OfLong DRAW = hspmn_sampling_params.draw$layout();

    private final Arena arena = Arena.ofShared();
    private final int capacity;
    private final MemorySegment slots;
    private final MemorySegment tokens;
    private final MemorySegment params;
    private final MemorySegment next;

    public StepArrays(int capacity) {
        if (capacity < 1) {
            throw new IllegalArgumentException("capacity must be >= 1, got " + capacity);
        }
        this.capacity = capacity;
        this.slots = arena.allocate(4L * capacity, 64);
        this.tokens = arena.allocate(4L * capacity, 64);
        this.params = arena.allocate(PARAMS_BYTES * capacity, 64);
        this.next = arena.allocate(4L * capacity, 64);
        for (int i = 0; i < capacity; i++) {
            greedy(i);
        }
    }

    public int capacity() {
        return capacity;
    }

    /** Row i: append {@code token} to {@code slot}. */
    public StepArrays set(int i, int slot, int token) {
        slots.setAtIndex(ValueLayout.JAVA_INT, i, slot);
        tokens.setAtIndex(ValueLayout.JAVA_INT, i, token);
        return this;
    }

    /** Row i samples greedily (the lowest id of the largest logit). */
    public StepArrays greedy(int i) {
        return sampling(i, 0f, 0, 1f, 0L, 1L);
    }

    /**
     * Row i's sampling ({@code hspmn_sampling_params}; the definition in native/README.md "Sampling").
     *
     * @param draw 1-based index of this draw in the seed's stream (ignored when greedy)
     */
    public StepArrays sampling(int i, float temperature, int topK, float topP, long seed, long draw) {
        write(params, PARAMS_BYTES * i, temperature, topK, topP, seed, draw);
        return this;
    }

    /** Writes one {@code hspmn_sampling_params} at {@code offset} of {@code dst} (no slice: nothing allocated). */
    public static void write(MemorySegment dst, long offset, float temperature, int topK, float topP, long seed, long draw) {
        dst.set(TEMPERATURE, offset + hspmn_sampling_params.temperature$offset(), temperature);
        dst.set(TOP_K, offset + hspmn_sampling_params.top_k$offset(), topK);
        dst.set(TOP_P, offset + hspmn_sampling_params.top_p$offset(), topP);
        dst.set(RESERVED, offset + hspmn_sampling_params.reserved$offset(), 0);
        dst.set(SEED, offset + hspmn_sampling_params.seed$offset(), seed);
        dst.set(DRAW, offset + hspmn_sampling_params.draw$offset(), draw);
    }

    /** The token the last step sampled for row i (negative: its logits were not finite). */
    public int next(int i) {
        return next.getAtIndex(ValueLayout.JAVA_INT, i);
    }

    public MemorySegment slots() {
        return slots;
    }

    public MemorySegment tokens() {
        return tokens;
    }

    public MemorySegment params() {
        return params;
    }

    public MemorySegment next() {
        return next;
    }

    @Override
    public void close() {
        arena.close();
    }
}
