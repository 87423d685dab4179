package io.hspmn.jmh;

import io.hspmn.Backend;
import io.hspmn.Block;
import io.hspmn.Context;
import io.hspmn.DType;
import io.hspmn.ForwardOptions;
import io.hspmn.HspmnConfig;
import io.hspmn.Routing;
import io.hspmn.Tensor;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * A small block forward (inference) on the CPU backend, end to end from Java: the downcall, the
 * native routing, the reflexive stream, the sparse attention and the read of the aux scalar.
 * The pitfall this class guards against (JMH sample 05, state lifecycle): native tensors and the
 * block are made once per trial and closed in {@code @TearDown}, so neither allocation nor a leak
 * enters the measurement; the result is returned so the call is not dead code.
 */
@State(Scope.Benchmark)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
@Warmup(iterations = 2, time = 2)
@Measurement(iterations = 5, time = 2)
public class BlockForwardBench extends NativeBench {

    @Param({"128"})
    public int dim;

    @Param({"256"})
    public int seq;

    @Param({"2"})
    public int batch;

    @Param({"topk"})
    public String routing;

    private Context ctx;
    private Block block;
    private Tensor x;
    private Tensor out;

    @Setup(Level.Trial)
    public void setUp() {
        ctx = Context.create(Backend.CPU);
        HspmnConfig config = HspmnConfig.builder()
                .dim(dim).numHeads(dim / 64).numKvHeads(1)
                .routing(Routing.valueOf(routing.toUpperCase()))
                .sparsityK(0.2f)
                .build();
        block = Block.create(ctx, config, 7L);
        float[] data = new float[batch * seq * dim];
        SplittableRandom rnd = new SplittableRandom(11);
        for (int i = 0; i < data.length; i++) {
            data[i] = (float) (rnd.nextDouble() * 2 - 1);
        }
        x = Tensor.of(ctx, DType.BF16, data, batch, seq, dim);
        out = Tensor.create(ctx, DType.BF16, batch, seq, dim);
    }

    @Benchmark
    public float forward() {
        return block.forward(x, out, ForwardOptions.inference());
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        ctx.close(); // closes x, out and the block with it
    }
}
