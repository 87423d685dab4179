package io.hspmn;

import org.junit.jupiter.api.AfterEach;

import java.util.SplittableRandom;

/**
 * What LanguageModelTest and DropoutTest start each test from: a CPU context, a model and a batch of random
 * byte windows (tokens and their next-byte targets). The context is closed after each test, and with it
 * everything made from it.
 */
abstract class ModelFixture {
    Context ctx;
    LanguageModel model;
    Tensor tokens;
    Tensor targets;

    /** A model of {@code config} from {@code seed}; tokens and targets [b, s] of {@link #randomBatch}(dataSeed). */
    void open(ModelConfig config, long seed, int b, int s, long dataSeed) {
        ctx = GraphFixture.cpuContext();
        model = LanguageModel.create(ctx, config, seed);
        int[][] batch = randomBatch(b, s, dataSeed);
        tokens = Tensor.ofInts(ctx, batch[0], b, s);
        targets = Tensor.ofInts(ctx, batch[1], b, s);
    }

    @AfterEach
    void closeContext() {
        if (ctx != null) {
            ctx.close();
        }
    }

    /** {tokens, targets} of random byte windows: targets are the tokens shifted by one. */
    static int[][] randomBatch(int b, int s, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        int[] tok = new int[b * s];
        int[] tgt = new int[b * s];
        for (int i = 0; i < b; i++) {
            int prev = r.nextInt(256);
            for (int t = 0; t < s; t++) {
                int next = r.nextInt(256);
                tok[i * s + t] = prev;
                tgt[i * s + t] = next;
                prev = next;
            }
        }
        return new int[][] {tok, tgt};
    }
}
