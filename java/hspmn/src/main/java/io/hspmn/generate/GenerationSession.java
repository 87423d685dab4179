package io.hspmn.generate;

import io.hspmn.StepArrays;

import java.lang.foreign.MemorySegment;
import java.util.NoSuchElementException;
import java.util.PrimitiveIterator;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.locks.LockSupport;

/**
 * One generation in flight: read its tokens as they come ({@link #iterator()}, or a
 * {@link GenerationListener} given at submission), wait for the end ({@link #await()}), or stop it
 * ({@link #cancel()}, {@link #close()}, or interrupting a thread that waits on it).
 *
 * <p>Thread-safe. Tokens are published by the decode thread one step at a time; any number of threads may
 * read them. Cancellation takes effect between steps: a step in progress finishes first, and the session
 * then ends with {@link FinishReason#CANCELLED}, keeping the tokens it has.
 */
public final class GenerationSession implements AutoCloseable, Iterable<Integer> {
    private final GenerationRequest request;
    private final GenerationListener listener;
    private final long submitNanos = System.nanoTime();
    private final CompletableFuture<GenerationResult> done = new CompletableFuture<>();
    private volatile boolean cancelRequested;
    private volatile Runnable onCancel;
    // tokens[0..published) are final and visible to every thread that has read `published`
    private volatile int published;
    private int[] tokens;
    private float[] logprobs;
    private volatile Thread waiter;

    final GenSlot slot = new GenSlot();

    GenerationSession(GenerationRequest request, GenerationListener listener) {
        this.request = request;
        this.listener = listener;
        int cap = Math.min(request.maxNewTokens(), 64);
        this.tokens = new int[cap];
        this.logprobs = request.logprobs() ? new float[cap] : null;
    }

    public GenerationRequest request() {
        return request;
    }

    /** Asks the decode loop to stop this generation before its next step. Idempotent; no effect once done. */
    public void cancel() {
        if (!cancelRequested && !done.isDone()) {
            cancelRequested = true;
            Runnable r = onCancel;
            if (r != null) {
                r.run();
            }
        }
    }

    public boolean isCancelRequested() {
        return cancelRequested;
    }

    public boolean isDone() {
        return done.isDone();
    }

    /** Tokens published so far. */
    public int tokenCount() {
        return published;
    }

    /** A copy of the tokens published so far. */
    public int[] tokensSoFar() {
        int n = published;
        int[] t = tokens;
        return java.util.Arrays.copyOf(t, n);
    }

    /**
     * Waits for the end. If the waiting thread is interrupted, the generation is cancelled and the
     * interrupt is passed on as InterruptedException.
     */
    public GenerationResult await() throws InterruptedException {
        try {
            return done.get();
        } catch (InterruptedException e) {
            cancel();
            throw e;
        } catch (ExecutionException e) {
            throw new IllegalStateException(e.getCause());
        }
    }

    public GenerationResult await(long timeout, TimeUnit unit) throws InterruptedException, TimeoutException {
        try {
            return done.get(timeout, unit);
        } catch (InterruptedException e) {
            cancel();
            throw e;
        } catch (ExecutionException e) {
            throw new IllegalStateException(e.getCause());
        }
    }

    /** Completes with the result (never exceptionally: failures are a result with {@link FinishReason#ERROR}). */
    public CompletableFuture<GenerationResult> future() {
        return done.copy();
    }

    /**
     * The tokens, blocking until each is published; ends when the generation does. A thread interrupted
     * while it waits cancels the generation, keeps its interrupt status and gets a CancellationException.
     */
    @Override
    public PrimitiveIterator.OfInt iterator() {
        return new PrimitiveIterator.OfInt() {
            private int i;

            @Override
            public boolean hasNext() {
                while (true) {
                    if (published > i) {
                        return true;
                    }
                    if (done.isDone()) {
                        return published > i;
                    }
                    waiter = Thread.currentThread();
                    if (published > i || done.isDone()) {
                        waiter = null;
                        continue;
                    }
                    LockSupport.park(GenerationSession.this);
                    waiter = null;
                    if (Thread.interrupted()) {
                        cancel();
                        Thread.currentThread().interrupt();
                        throw new CancellationException("interrupted while waiting for a token; the generation is cancelled");
                    }
                }
            }

            @Override
            public int nextInt() {
                if (!hasNext()) {
                    throw new NoSuchElementException();
                }
                return tokens[i++];
            }
        };
    }

    /** Cancels the generation if it is still running; does not wait. */
    @Override
    public void close() {
        cancel();
    }

    void onCancel(Runnable r) {
        onCancel = r;
    }

    private void wake() {
        Thread w = waiter;
        if (w != null) {
            LockSupport.unpark(w);
        }
    }

    /** The decode-thread side of the session. */
    final class GenSlot extends Slot {
        private Sampler sampler;
        private StopMatcher stops;
        private int n;            // tokens generated (some may be held back or cut as a stop sequence)
        private long startNanos = -1;
        private long firstTokenNanos = -1;
        private FinishReason reason;

        GenerationSession session() {
            return GenerationSession.this;
        }

        @Override
        int promptLength() {
            return request.promptLength();
        }

        @Override
        int promptAt(int i) {
            return request.promptAt(i);
        }

        @Override
        boolean cancelRequested() {
            return cancelRequested;
        }

        @Override
        void started() {
            startNanos = System.nanoTime();
        }

        void init(int vocab) {
            sampler = new Sampler(request.sampling(), vocab);
            stops = new StopMatcher(request.stopSequences());
        }

        @Override
        boolean accept(MemorySegment logits, long offset, int vocab, int length, int maxLength) {
            int t = sampler.sample(logits, offset);
            float lp = logprobs != null ? (float) Sampler.logProb(logits, offset, vocab, t) : Float.NaN;
            return acceptToken(t, lp, length, maxLength);
        }

        @Override
        boolean needsLogits() {
            return logprobs != null;
        }

        @Override
        void writeSampling(MemorySegment params, long offset) {
            SamplingParams p = request.sampling();
            long draw = 1;
            if (!p.isGreedy()) {
                // the engine's sample takes this sequence's next draw, as Sampler.sample would
                draw = sampler.draws() + 1;
                sampler.seek(draw);
            }
            StepArrays.write(params, offset, p.temperature(), p.topK(), p.topP(), p.seed(), draw);
        }

        @Override
        boolean acceptToken(int t, int length, int maxLength) {
            return acceptToken(t, Float.NaN, length, maxLength);
        }

        private boolean acceptToken(int t, float logprob, int length, int maxLength) {
            if (n == tokens.length) {
                int cap = (int) Math.min(request.maxNewTokens(), 2L * tokens.length);
                tokens = java.util.Arrays.copyOf(tokens, cap);
                if (logprobs != null) {
                    logprobs = java.util.Arrays.copyOf(logprobs, cap);
                }
            }
            tokens[n] = t;
            if (logprobs != null) {
                logprobs[n] = logprob;
            }
            n++;
            if (n == 1) {
                firstTokenNanos = System.nanoTime();
            }
            if (!stops.isEmpty()) {
                int matched = stops.matchedLength(tokens, n);
                if (matched > 0) {
                    n -= matched;
                    reason = FinishReason.STOP;
                    publish(n);
                    return false;
                }
            }
            if (n >= request.maxNewTokens()) {
                reason = FinishReason.LENGTH;
                publish(n);
                return false;
            }
            if (length >= maxLength) {
                reason = FinishReason.CONTEXT;
                publish(n);
                return false;
            }
            publish(stops.isEmpty() ? n : n - stops.holdBack(tokens, n));
            next = t;
            return true;
        }

        private void publish(int upTo) {
            int from = published;
            if (upTo <= from) {
                return;
            }
            if (listener != null) {
                for (int i = from; i < upTo; i++) {
                    listener.onToken(i, tokens[i], logprobs == null ? Float.NaN : logprobs[i]);
                }
            }
            published = upTo;
            wake();
        }

        @Override
        void complete(DecodeEngine engine) {
            finish(reason, null);
        }

        @Override
        void cancelled() {
            finish(FinishReason.CANCELLED, null);
        }

        @Override
        void fail(Throwable t) {
            finish(FinishReason.ERROR, t);
        }

        private void finish(FinishReason why, Throwable error) {
            if (done.isDone()) {
                return;
            }
            long now = System.nanoTime();
            int count = published;
            GenerationResult r = new GenerationResult(why, java.util.Arrays.copyOf(tokens, count),
                    logprobs == null ? null : java.util.Arrays.copyOf(logprobs, count), request.promptLength(),
                    startNanos < 0 ? now - submitNanos : startNanos - submitNanos,
                    firstTokenNanos < 0 ? -1 : firstTokenNanos - submitNanos, now - submitNanos, error);
            done.complete(r);
            wake();
            if (listener != null) {
                try {
                    listener.onFinish(r);
                } catch (RuntimeException ignored) {
                    // the session is over; a failing listener cannot change its result
                }
            }
        }
    }
}
