package io.hspmn;

import org.junit.jupiter.api.AfterEach;

/**
 * What ForwardGraphTest (CPU), GpuForwardGraphTest (CUDA) and BadInputTest start each test from: a context, a small block
 * (two heads sharing one KV head) and its x, out and aux tensors in one kind of memory. The context is
 * closed after each test, and with it everything made from it.
 */
abstract class GraphFixture {
    static final int B = 2;

    Context ctx;
    Block block;
    Tensor x;
    Tensor out;
    Tensor aux;

    static HspmnConfig config(int dim) {
        return HspmnConfig.builder().dim(dim).numHeads(2).numKvHeads(1).mlpRatio(2).sparsityK(0.25f).build();
    }

    /** The context most CPU tests run in: the CPU backend on two threads. */
    static Context cpuContext() {
        return Context.create(ContextOptions.defaults().withBackend(Backend.CPU).withNumThreads(2));
    }

    /** Takes ctx; a block of dim D from seed; x [B, S, D] bf16 of gaussian(dataSeed), out like it, aux [1] f32. */
    void open(Context c, int S, int D, long seed, MemoryKind memory, long dataSeed) {
        open(c, config(D), S, seed, memory, dataSeed);
    }

    /** The same with a block of {@code config}; D is its dim. */
    void open(Context c, HspmnConfig config, int S, long seed, MemoryKind memory, long dataSeed) {
        int D = config.dim();
        ctx = c;
        block = Block.create(ctx, config, seed);
        x = Tensor.create(ctx, DType.BF16, memory, B, S, D);
        x.copyFrom(BadInputTest.gaussian(B * S * D, dataSeed));
        out = Tensor.create(ctx, DType.BF16, memory, B, S, D);
        aux = Tensor.create(ctx, DType.F32, memory, 1);
    }

    @AfterEach
    void closeContext() {
        if (ctx != null) {
            ctx.close();
        }
    }
}
