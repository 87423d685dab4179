package io.hspmn.generate;

import java.util.ArrayDeque;
import java.util.Iterator;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.LockSupport;
import java.util.function.Supplier;

/**
 * The thread-safe front of generation: any number of threads submit generations and scoring passes; one
 * worker thread owns the {@link DecodeEngine} (and so the native context, which allows one thread at a
 * time) and runs a {@link Generator} over it.
 *
 * <p>The worker's loop: admit waiting requests while the batch has room, then run one {@link Generator#step}:
 * up to {@link Options#prefillChunk()} tokens of the admitted prompts are appended to their sequences
 * (continuous batching: a long prompt is prefilled over several steps), then every sequence past its prompt
 * gets one token. So requests that arrive while others decode join the batch within a step or a few, a
 * new prompt, however long, delays the running streams by at most one chunk per token, and finished or
 * cancelled requests leave the batch between steps.
 *
 * <p>Admission is bounded: at most {@code maxBatch} sequences in flight and {@code maxQueued} waiting;
 * beyond that {@link #submit} throws {@link RejectedExecutionException} at once instead of queueing.
 * Listeners run on the worker thread (see {@link GenerationListener}).
 */
public final class Engine implements AutoCloseable {

    /**
     * @param maxBatch     sequences in flight together (decoding or prefilling), >= 1
     * @param maxQueued    requests waiting for a place in the batch, >= 0
     * @param prefillChunk the most prompt tokens appended between two decode steps, >= 1: the longest a
     *                     new prompt can hold up the running streams is the time to prefill this many
     *                     tokens; smaller chunks cost more engine calls per prompt (default
     *                     {@value Generator#DEFAULT_PREFILL_CHUNK})
     */
    public record Options(int maxBatch, int maxQueued, int prefillChunk) {
        public Options {
            if (maxBatch < 1) {
                throw new IllegalArgumentException("maxBatch must be >= 1, got " + maxBatch);
            }
            if (maxQueued < 0) {
                throw new IllegalArgumentException("maxQueued must be >= 0, got " + maxQueued);
            }
            if (prefillChunk < 1) {
                throw new IllegalArgumentException("prefillChunk must be >= 1, got " + prefillChunk);
            }
        }

        /** With the default prefill chunk. */
        public Options(int maxBatch, int maxQueued) {
            this(maxBatch, maxQueued, Generator.DEFAULT_PREFILL_CHUNK);
        }

        public static Options defaults() {
            return new Options(8, 64);
        }

        public Options withPrefillChunk(int tokens) {
            return new Options(maxBatch, maxQueued, tokens);
        }
    }

    /** A snapshot of the engine's counters. */
    public record Stats(long steps, long stepSequences, long prefills, int active, int queued) {
        /** Mean sequences per decode step (0 before the first). */
        public double meanBatch() {
            return steps == 0 ? 0 : (double) stepSequences / steps;
        }
    }

    private final Options options;
    private final ConcurrentLinkedQueue<Slot> inbox = new ConcurrentLinkedQueue<>();
    private final AtomicInteger admitted = new AtomicInteger(); // in flight + waiting
    private final Thread worker;
    private final CountDownLatch ready = new CountDownLatch(1);
    private volatile boolean closing;
    private volatile Throwable startFailure;
    private volatile Throwable crashed;
    private volatile Generator generator;
    private volatile int vocabSize;
    private volatile int maxLength;
    private volatile int numLayers;
    private volatile int waitingCount;

    private Engine(Supplier<? extends DecodeEngine> factory, Options options, String name) {
        this.options = options;
        this.worker = Thread.ofPlatform().name(name).daemon(true).unstarted(() -> run(factory));
    }

    /**
     * Starts the worker thread, which creates the decode engine with {@code factory} (so the engine, and the
     * native context it makes, belong to that thread from birth) and closes it when the Engine closes.
     * Returns once the engine exists; a failure of the factory is thrown here.
     */
    public static Engine start(Supplier<? extends DecodeEngine> factory, Options options) {
        Objects.requireNonNull(factory, "factory");
        Objects.requireNonNull(options, "options");
        Engine e = new Engine(factory, options, "hspmn-engine");
        e.worker.start();
        boolean interrupted = false;
        while (true) {
            try {
                e.ready.await();
                break;
            } catch (InterruptedException ie) {
                interrupted = true;
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
        if (e.startFailure != null) {
            Throwable t = e.startFailure;
            if (t instanceof RuntimeException r) {
                throw r;
            }
            if (t instanceof Error err) {
                throw err;
            }
            throw new IllegalStateException("the decode engine could not be created", t);
        }
        return e;
    }

    public Options options() {
        return options;
    }

    public int vocabSize() {
        return vocabSize;
    }

    public int maxLength() {
        return maxLength;
    }

    public int numLayers() {
        return numLayers;
    }

    /** Streams tokens through the returned session's iterator. */
    public GenerationSession submit(GenerationRequest request) {
        return submit(request, null);
    }

    /**
     * Queues a generation.
     *
     * @param listener hears each token on the worker thread, or null
     * @throws IllegalArgumentException   when the prompt does not fit the model (ids, length)
     * @throws RejectedExecutionException when the engine is full or closed
     */
    public GenerationSession submit(GenerationRequest request, GenerationListener listener) {
        Objects.requireNonNull(request, "request");
        checkFits(request.maxPromptId(), request.promptLength());
        GenerationSession s = new GenerationSession(request, listener);
        s.onCancel(this::wakeWorker);
        enqueue(s.slot);
        return s;
    }

    /**
     * Queues a scoring pass over {@code ids} (see {@link ScoreResult}). Cancelling the future cancels it.
     *
     * @throws IllegalArgumentException   when the text does not fit the model (ids, length)
     * @throws RejectedExecutionException when the engine is full or closed
     */
    public CompletableFuture<ScoreResult> score(int[] ids) {
        ScoreJob job = new ScoreJob(ids);
        checkFits(job.maxId(), job.length());
        job.future.whenComplete((r, t) -> wakeWorker());
        enqueue(job);
        return job.future;
    }

    private void checkFits(int maxId, int length) {
        if (maxId >= vocabSize) {
            throw new IllegalArgumentException("token id " + maxId + " is outside the model's vocabulary of " + vocabSize);
        }
        if (length > maxLength) {
            throw new IllegalArgumentException(length + " tokens, but the engine holds at most " + maxLength);
        }
    }

    private void enqueue(Slot slot) {
        if (closing || crashed != null) {
            throw new RejectedExecutionException("the engine is " + (closing ? "closed" : "down: " + crashed));
        }
        int limit = options.maxBatch() + options.maxQueued();
        while (true) {
            int n = admitted.get();
            if (n >= limit) {
                throw new RejectedExecutionException("the engine is full: " + options.maxBatch() + " in flight and "
                        + options.maxQueued() + " waiting");
            }
            if (admitted.compareAndSet(n, n + 1)) {
                break;
            }
        }
        slot.onLeave(admitted::decrementAndGet);
        inbox.add(slot);
        wakeWorker();
        if (closing) {
            // lost a race with close(): the worker may have drained already; make sure it is not stranded
            wakeWorker();
        }
    }

    private void wakeWorker() {
        LockSupport.unpark(worker);
    }

    public Stats stats() {
        Generator g = generator;
        if (g == null) {
            return new Stats(0, 0, 0, 0, waitingCount);
        }
        int inFlight = admitted.get();
        int queued = Math.min(inFlight, waitingCount + inbox.size());
        return new Stats(g.steps(), g.stepSequences(), g.prefills(), Math.max(0, inFlight - queued), queued);
    }

    private void run(Supplier<? extends DecodeEngine> factory) {
        DecodeEngine engine;
        Generator gen;
        try {
            engine = Objects.requireNonNull(factory.get(), "the factory returned null");
            gen = new Generator(engine, options.maxBatch(), options.prefillChunk());
            vocabSize = engine.vocabSize();
            maxLength = engine.maxLength();
            numLayers = engine.numLayers();
            generator = gen;
        } catch (Throwable t) {
            startFailure = t;
            ready.countDown();
            return;
        }
        ready.countDown();
        ArrayDeque<Slot> waiting = new ArrayDeque<>();
        try {
            while (!closing) {
                drain(waiting);
                while (!gen.isFull() && !waiting.isEmpty()) {
                    Slot s = waiting.poll();
                    waitingCount = waiting.size();
                    gen.enqueue(s);
                }
                if (gen.active() == 0) {
                    if (inbox.isEmpty() && !closing) {
                        LockSupport.park(this);
                    }
                    Thread.interrupted(); // an interrupt of the worker is only a wake-up; close() is the way to stop it
                    continue;
                }
                gen.step();
            }
        } catch (Throwable t) {
            crashed = t;
        } finally {
            drain(waiting);
            for (Slot s : waiting) {
                s.finishCancelled();
            }
            waiting.clear();
            waitingCount = 0;
            try {
                gen.close();
            } finally {
                engine.close();
            }
        }
    }

    /** Moves new arrivals to the waiting line and ends the waiting ones that were cancelled. */
    private void drain(ArrayDeque<Slot> waiting) {
        Slot s;
        while ((s = inbox.poll()) != null) {
            waiting.add(s);
        }
        for (Iterator<Slot> it = waiting.iterator(); it.hasNext(); ) {
            Slot w = it.next();
            if (w.cancelRequested()) {
                it.remove();
                w.finishCancelled();
            }
        }
        waitingCount = waiting.size();
    }

    /**
     * Stops the worker: sessions in flight or waiting end with {@link FinishReason#CANCELLED}, the decode
     * engine is closed on the worker thread; waits for that. Idempotent.
     */
    @Override
    public void close() {
        closing = true;
        wakeWorker();
        boolean interrupted = false;
        while (worker.isAlive()) {
            try {
                worker.join();
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        // anything that slipped in after the worker's last drain
        Slot s;
        while ((s = inbox.poll()) != null) {
            s.finishCancelled();
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }
}
