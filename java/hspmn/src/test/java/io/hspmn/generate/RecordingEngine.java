package io.hspmn.generate;

import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;

/**
 * A DecodeEngine that passes every call to another and logs the calls that compute ({@link #extend} pieces
 * and steps) in order, into a list that listeners may add their own events to: the decode thread writes
 * all of them, so their order is the order things happened. An optional latch holds the first call back
 * (tests use it to let several submissions arrive before anything runs). Sampled steps are logged as steps;
 * {@link #javaSampling()} hides the inner engine's own sampling.
 */
class RecordingEngine implements DecodeEngine {
    /** Something that happened on the decode thread. */
    sealed interface Event permits Piece, Step, Token {
    }

    /** A prompt piece of {@code count} tokens appended to {@code sequence}. */
    record Piece(Sequence sequence, int count, boolean logits) implements Event {
    }

    /** A decode step of {@code count} sequences. */
    record Step(int count) implements Event {
    }

    /** Token {@code index} of stream {@code stream} (added by the test's listeners). */
    record Token(int stream, int index) implements Event {
    }

    final DecodeEngine inner;
    final List<Event> events = Collections.synchronizedList(new ArrayList<>());
    volatile CountDownLatch holdFirstCall;
    /** When set, the engine does not offer its own sampling: the Generator samples the logits in Java. */
    volatile boolean javaSampling;

    RecordingEngine(DecodeEngine inner) {
        this.inner = inner;
    }

    private void hold() {
        CountDownLatch l = holdFirstCall;
        if (l != null) {
            try {
                l.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            holdFirstCall = null;
        }
    }

    /** A listener that logs each token of stream {@code stream} here, then calls {@code also} (or not, if null). */
    GenerationListener tokens(int stream, GenerationListener also) {
        return new GenerationListener() {
            @Override
            public void onToken(int index, int token, float logprob) {
                events.add(new Token(stream, index));
                if (also != null) {
                    also.onToken(index, token, logprob);
                }
            }
        };
    }

    List<Event> snapshot() {
        synchronized (events) {
            return new ArrayList<>(events);
        }
    }

    @Override
    public int vocabSize() {
        return inner.vocabSize();
    }

    @Override
    public int numLayers() {
        return inner.numLayers();
    }

    @Override
    public int maxLength() {
        return inner.maxLength();
    }

    @Override
    public Sequence open() {
        return inner.open();
    }

    @Override
    public MemorySegment extend(Sequence sequence, MemorySegment ids, int count, boolean wantLogits) {
        hold();
        events.add(new Piece(sequence, count, wantLogits));
        return inner.extend(sequence, ids, count, wantLogits);
    }

    @Override
    public MemorySegment step(Sequence[] sequences, int count, MemorySegment nextIds) {
        hold();
        events.add(new Step(count));
        return inner.step(sequences, count, nextIds);
    }

    /** This engine with {@link #javaSampling} set. */
    RecordingEngine javaSampling() {
        javaSampling = true;
        return this;
    }

    @Override
    public boolean samplesTokens() {
        return !javaSampling && inner.samplesTokens();
    }

    @Override
    public MemorySegment stepSampled(Sequence[] sequences, int count, MemorySegment nextIds, MemorySegment params,
                                     MemorySegment sampled, boolean wantLogits) {
        hold();
        events.add(new Step(count));
        return inner.stepSampled(sequences, count, nextIds, params, sampled, wantLogits);
    }

    @Override
    public void release(Sequence sequence) {
        inner.release(sequence);
    }

    @Override
    public ForwardReport forwardReport(MemorySegment ids, int count) {
        return inner.forwardReport(ids, count);
    }

    @Override
    public void close() {
        inner.close();
    }
}
