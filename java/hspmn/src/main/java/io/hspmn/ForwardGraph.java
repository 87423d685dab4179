package io.hspmn;

import io.hspmn.ffi.hspmn_h;

import java.lang.foreign.MemorySegment;

/**
 * An inference forward of one {@link Block} recorded as a CUDA graph ({@code hspmn_graph}), made by
 * {@link Block#captureForward(Tensor, Tensor, Tensor, ForwardOptions)}. {@link #launch()} replays it on
 * the context's stream with no host work besides the launch and returns without waiting
 * ({@link Context#synchronize()} waits).
 *
 * <p><b>What is bound.</b> The graph replays on the addresses it was captured with: write new input into
 * {@link #input()} and read {@link #output()} (and {@link #aux()}) after the replay. The forward options
 * are fixed at capture. Parameter values are not: {@link Block#setParam} between replays takes effect
 * at the next launch. Replays do not scan the input for NaN/Inf (the capture did, once).
 *
 * <p><b>Lifetime.</b> The block and the bound tensors must outlive the graph: closing any of them while
 * the graph is open fails with {@link HspmnStateException} and leaves it open. {@link Context#close()}
 * closes graphs before blocks and tensors. Closing the graph releases the block and tensors it holds.
 *
 * <p><b>Invalidation.</b> A later call on the block that regrows its scratch (a forward of a larger
 * shape, the block's first training forward or route call) moves memory the graph holds; {@link #launch()}
 * then throws {@link HspmnStateException} and the graph must be closed and captured again. A smaller
 * forward, or another graph of the same block, leaves it valid. A replay overwrites what a training
 * forward kept, so {@link Block#backward} after a launch fails until the next training forward.
 *
 * <p>Belongs to the block's {@link Context} and follows its one-thread-at-a-time rule.
 */
public final class ForwardGraph extends NativeHandle {
    private final Block block;
    private final Tensor x;
    private final Tensor out;
    private final Tensor aux;

    ForwardGraph(Context ctx, Block block, Tensor x, Tensor out, Tensor aux, MemorySegment handle) {
        super(ctx, handle, "hspmn_graph_destroy", hspmn_h::hspmn_graph_destroy);
        this.block = block;
        this.x = x;
        this.out = out;
        this.aux = aux;
    }

    /** Queues one replay of the captured forward; does not wait for it. */
    public void launch() {
        try (var g = ctx.enter("ForwardGraph.launch")) {
            Native.check(hspmn_h.hspmn_graph_launch(handle("ForwardGraph.launch")), "hspmn_graph_launch");
        }
    }

    /** The block the forward was captured from. */
    public Block block() {
        return block;
    }

    /** x: [B, S, D] bf16 device tensor the replay reads. */
    public Tensor input() {
        return x;
    }

    /** out: [B, S, D] bf16 device tensor the replay writes. */
    public Tensor output() {
        return out;
    }

    /** aux: [1] f32 device tensor the replay writes, or null when the aux loss was not captured. */
    public Tensor aux() {
        return aux;
    }

    @Override
    public String toString() {
        return "ForwardGraph[" + block + ", x " + x + "]" + (isClosed() ? " (closed)" : "");
    }
}
