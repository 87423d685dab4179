package io.hspmn.eval;

import io.hspmn.Backend;
import io.hspmn.Context;
import io.hspmn.DType;
import io.hspmn.LanguageModel;
import io.hspmn.LossResult;
import io.hspmn.MemoryKind;
import io.hspmn.ModelForwardOptions;
import io.hspmn.Tensor;
import io.hspmn.data.CorpusSplit;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * Bits per byte of a language model over a whole held-out byte stream, each byte after the first
 * predicted exactly once.
 *
 * <p>The stream of n bytes is cut into non-overlapping windows of the model's context S: window k reads
 * bytes [kS, kS + S) and predicts bytes [kS + 1, kS + S] (so consecutive windows share one byte, the
 * last target of one being the first input of the next, as {@link io.hspmn.data.BatchSampler} cuts).
 * The first byte of the stream has nothing before it and is never predicted; the first prediction of
 * every window sees one byte of context, the last sees S (no context is carried across windows, as in
 * nanoGPT's and most published held-out figures at a fixed context). The (n - 1) mod S bytes left after
 * the whole windows form one shorter last window, so the tail is scored too. Windows run B at a time
 * (the last batch of whole windows may be smaller; the short window runs alone).
 *
 * <p>Evaluation mode: no routing noise, nothing kept for backward. The routed fraction of each layer
 * is weighted by the tokens of each forward, so it is the share of all n - 1 scored positions that
 * layer sent to attention.
 */
public final class HeldOutEval {
    private HeldOutEval() {
    }

    /** One window: reads bytes [start, start + length) and predicts [start + 1, start + length + 1). */
    public record Window(long start, int length) {
    }

    /** Told of every forward, for tests and progress: the windows it scored. */
    public interface Listener {
        void scored(List<Window> windows);
    }

    /**
     * The windows that score a stream of {@code bytes} bytes at context {@code seqLen}: every byte at
     * offsets 1..bytes-1 is a target of exactly one window. Empty for a stream of fewer than 2 bytes.
     */
    public static List<Window> windows(long bytes, int seqLen) {
        if (seqLen < 1) {
            throw new IllegalArgumentException("seqLen must be >= 1, got " + seqLen);
        }
        List<Window> w = new ArrayList<>();
        long targets = Math.max(0, bytes - 1);
        long whole = targets / seqLen;
        for (long k = 0; k < whole; k++) {
            w.add(new Window(k * seqLen, seqLen));
        }
        int tail = (int) (targets - whole * seqLen);
        if (tail > 0) {
            w.add(new Window(whole * seqLen, tail));
        }
        return w;
    }

    /**
     * Scores the whole of {@code split} with {@code model} (on its context's backend).
     *
     * @param seqLen   context S of each window (the run's --seq-len)
     * @param batch    whole windows per forward
     * @param listener told of each forward's windows, or null
     */
    public static HeldOutResult evaluate(LanguageModel model, CorpusSplit split, int seqLen, int batch, Listener listener) {
        Objects.requireNonNull(model, "model");
        Objects.requireNonNull(split, "split");
        if (batch < 1) {
            throw new IllegalArgumentException("batch must be >= 1, got " + batch);
        }
        List<Window> all = windows(split.size(), seqLen);
        if (all.isEmpty()) {
            throw new IllegalArgumentException("the " + split.name() + " split has " + split.size()
                    + " bytes: at least 2 are needed to predict one");
        }
        Context ctx = model.context();
        MemoryKind mem = ctx.backend() == Backend.CUDA ? MemoryKind.DEVICE : MemoryKind.HOST;
        int layers = model.config().numLayers();
        double nats = 0;
        double[] routedTokens = new double[layers];
        long scored = 0;
        byte[] buf = new byte[seqLen + 1];
        long t0 = System.nanoTime();
        for (int i = 0; i < all.size(); ) {
            // whole windows B at a time; the short tail window (if any) alone
            int len = all.get(i).length();
            int n = 1;
            while (n < batch && i + n < all.size() && all.get(i + n).length() == len) {
                n++;
            }
            List<Window> group = all.subList(i, i + n);
            int[] tokens = new int[n * len];
            int[] targets = new int[n * len];
            for (int b = 0; b < n; b++) {
                split.copy(group.get(b).start(), buf, 0, len + 1);
                for (int t = 0; t < len; t++) {
                    tokens[b * len + t] = buf[t] & 0xFF;
                    targets[b * len + t] = buf[t + 1] & 0xFF;
                }
            }
            LossResult r;
            try (Tensor tk = Tensor.create(ctx, DType.I32, mem, n, len); Tensor tg = Tensor.create(ctx, DType.I32, mem, n, len)) {
                tk.copyFrom(tokens);
                tg.copyFrom(targets);
                r = model.forward(tk, tg, ModelForwardOptions.evaluation());
            }
            long count = (long) n * len;
            if (!Float.isFinite(r.crossEntropy())) {
                throw new IllegalStateException("the model's cross-entropy on bytes " + group.getFirst().start() + ".. of the "
                        + split.name() + " split is " + r.crossEntropy() + ": its weights are damaged or have diverged");
            }
            nats += (double) r.crossEntropy() * count;
            float[] f = r.routedFraction();
            for (int l = 0; l < layers; l++) {
                routedTokens[l] += (double) f[l] * count;
            }
            scored += count;
            if (listener != null) {
                listener.scored(List.copyOf(group));
            }
            i += n;
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        double[] routed = new double[layers];
        for (int l = 0; l < layers; l++) {
            routed[l] = routedTokens[l] / scored;
        }
        return new HeldOutResult(split.size(), scored, all.size(), seqLen, batch, nats / scored, routed, seconds,
                ctx.backend());
    }
}
