package io.hspmn.generate;

import java.lang.foreign.MemorySegment;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;

/**
 * Scoring as teacher-forced decoding: the sequence starts from the first token and is stepped with the
 * text's own tokens, reading each one's log-probability from the logits before it. It shares steps with
 * generations, so it costs what decoding the text costs (with a cached engine, one token per step).
 */
final class ScoreJob extends Slot {
    private final int[] ids;
    private final float[] logprobs;
    private final long submitNanos = System.nanoTime();
    final CompletableFuture<ScoreResult> future = new CompletableFuture<>();
    private int scored;

    ScoreJob(int[] ids) {
        if (ids.length == 0) {
            throw new IllegalArgumentException("nothing to score: the text is empty");
        }
        this.ids = ids.clone();
        this.logprobs = new float[ids.length - 1];
    }

    int maxId() {
        int m = 0;
        for (int v : ids) {
            m = Math.max(m, v);
        }
        return m;
    }

    int length() {
        return ids.length;
    }

    @Override
    int promptLength() {
        return ids.length;
    }

    @Override
    int promptAt(int i) {
        return ids[i];
    }

    @Override
    int prefillLength() {
        return 1;
    }

    @Override
    boolean cancelRequested() {
        return future.isCancelled();
    }

    @Override
    boolean accept(MemorySegment logits, long offset, int vocab, int length, int maxLength) {
        if (scored == logprobs.length) {
            return false; // a one-token text: nothing to predict
        }
        int target = ids[scored + 1];
        double lp = Sampler.logProb(logits, offset, vocab, target);
        if (!Double.isFinite(lp)) {
            // log softmax of finite logits is finite: these hold NaN or an infinity
            throw new IllegalStateException("the model's logits before token " + (scored + 1) + " are not finite (NaN or "
                    + "infinite): its weights are damaged or have diverged");
        }
        logprobs[scored++] = (float) lp;
        if (scored == logprobs.length) {
            return false;
        }
        next = target;
        return true;
    }

    @Override
    void complete(DecodeEngine engine) {
        try (var arena = java.lang.foreign.Arena.ofConfined()) {
            MemorySegment seg = arena.allocateFrom(java.lang.foreign.ValueLayout.JAVA_INT, ids);
            ForwardReport report = engine.forwardReport(seg, ids.length);
            future.complete(new ScoreResult(ids, logprobs, report, System.nanoTime() - submitNanos));
        } catch (RuntimeException e) {
            future.completeExceptionally(e);
        }
    }

    @Override
    void cancelled() {
        future.completeExceptionally(new CancellationException("scoring was cancelled"));
    }

    @Override
    void fail(Throwable t) {
        future.completeExceptionally(t);
    }
}
