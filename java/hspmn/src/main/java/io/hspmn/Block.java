package io.hspmn;

import io.hspmn.ffi.hspmn_backward_params;
import io.hspmn.ffi.hspmn_block_params;
import io.hspmn.ffi.hspmn_h;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import java.util.Objects;

/**
 * One HSPMN block ({@code hspmn_block}): router, reflexive conv + SwiGLU stream and sparse-query
 * dense-key attention, with its parameters (bf16) and their gradients (f32).
 * Belongs to its {@link Context} and follows its one-thread-at-a-time rule. Closing it frees its parameters,
 * gradients and caches; while a {@link ForwardGraph} captured from it is open, that throws
 * {@link HspmnStateException} and the block stays open.
 */
public final class Block extends ParameterHandle {
    private static final ByName BY_NAME = new ByName(hspmn_h::hspmn_block_param_count, hspmn_h::hspmn_block_param_name,
            hspmn_h::hspmn_block_param_describe, hspmn_h::hspmn_block_get_param, hspmn_h::hspmn_block_set_param,
            hspmn_h::hspmn_block_get_grad, hspmn_h::hspmn_block_zero_grad);

    private final HspmnConfig config;
    private final Tensor aux;   // [1] f32, written by every forward
    private final Tensor dAux;  // [1] f32, read by backward

    private Block(Context ctx, HspmnConfig config, MemorySegment handle, Names names) {
        super(ctx, handle, KIND, BY_NAME, names);
        this.config = config;
        Tensor[] work = Tensor.work(ctx, new long[] {1}, new long[] {1});
        this.aux = work[0];
        this.dAux = work[1];
    }

    private static final Kind KIND = new Kind("hspmn_block", hspmn_block_params::allocate,
            hspmn_h::hspmn_block_default_params, hspmn_h::hspmn_block_create, hspmn_h::hspmn_block_get_params,
            hspmn_h::hspmn_block_destroy);

    /** The configuration as the library holds it. */
    public HspmnConfig config() {
        return config;
    }

    /** A block with parameters initialised from {@code seed} (see hspmn_block_create). */
    public static Block create(Context ctx, HspmnConfig config, long seed) {
        Objects.requireNonNull(config, "config").validate();
        return create(ctx, "Block.create", KIND, BY_NAME, config::writeTo, seed,
                (h, names, p) -> new Block(ctx, HspmnConfig.readFrom(p), h, names));
    }

    /**
     * Forward with the block's own routing.
     *
     * @param x   [B, S, D] bf16
     * @param out [B, S, D] bf16
     * @return the aux loss
     */
    public float forward(Tensor x, Tensor out, ForwardOptions options) {
        try (var g = ctx.enter("Block.forward")) {
            forwardInto(x, out, aux, options);
            return readScalar(aux);
        }
    }

    /**
     * Forward that leaves the aux loss in {@code auxOut} (or drops it when null) instead of reading it
     * back: on the CUDA backend with device tensors nothing here waits for the GPU, so this is the call
     * for a hot loop; {@link #forward(Tensor, Tensor, ForwardOptions)} synchronises to return aux.
     *
     * @param auxOut [1] f32, any memory kind, or null
     */
    public void forward(Tensor x, Tensor out, Tensor auxOut, ForwardOptions options) {
        try (var g = ctx.enter("Block.forward")) {
            if (auxOut != null) {
                auxOut.checkUsable(ctx, "aux");
            }
            forwardInto(x, out, auxOut, options);
        }
    }

    private void forwardInto(Tensor x, Tensor out, Tensor auxOut, ForwardOptions options) {
        Objects.requireNonNull(options, "options");
        checkCall("Block.forward", x, "x", out, "out");
        options.writeTo(ctx.forwardParams);
        Native.check(hspmn_h.hspmn_block_forward(handle(), ctx.forwardParams, x.handle(), out.handle(),
                auxOut == null ? java.lang.foreign.MemorySegment.NULL : auxOut.handle()), "hspmn_block_forward");
    }

    /**
     * Records one inference forward of this block into a CUDA graph that {@link ForwardGraph#launch()}
     * replays with no host work besides the launch (see {@link ForwardGraph} for what is bound and when
     * it invalidates). Runs the forward once first (sizing the block's scratch and, under
     * {@link NanPolicy#REJECT}, checking x), so {@code out} and {@code auxOut} already hold its result.
     *
     * @param x       [B, S, D] bf16, {@link MemoryKind#DEVICE}
     * @param out     [B, S, D] bf16, {@link MemoryKind#DEVICE}
     * @param auxOut  [1] f32, {@link MemoryKind#DEVICE}, or null when the aux loss is not wanted
     * @param options must not be training
     * @throws InvalidArgumentException on the CPU backend (which has no graphs), for training options,
     *                                  for a tensor that is not in device memory, or of the wrong shape
     */
    public ForwardGraph captureForward(Tensor x, Tensor out, Tensor auxOut, ForwardOptions options) {
        Objects.requireNonNull(options, "options");
        try (var g = ctx.enter("Block.captureForward")) {
            checkCall("Block.captureForward", x, "x", out, "out");
            MemorySegment a = Tensor.handleOrNull(auxOut, ctx, "aux");
            options.writeTo(ctx.forwardParams);
            return ctx.adopt(hspmn_h.hspmn_graph_capture_forward(handle(), ctx.forwardParams, x.handle(), out.handle(), a,
                    ctx.pointerOut), "hspmn_graph_capture_forward", h -> new ForwardGraph(ctx, this, x, out, auxOut, h));
        }
    }

    /**
     * Forward with routing pinned from outside. {@code noise}, {@code indices}, {@code counts} may be null;
     * indices and counts come together or not at all.
     *
     * @param x       [B, S, D] bf16
     * @param noise   [B, S] f32 Gumbel noise used instead of the generator (training only)
     * @param indices [B, C] i32 selected positions, strictly increasing, for the first counts[b]
     * @param counts  [B] i32
     * @param out     [B, S, D] bf16
     * @return the aux loss
     */
    public float forwardRouted(Tensor x, Tensor noise, Tensor indices, Tensor counts, Tensor out, ForwardOptions options) {
        Objects.requireNonNull(options, "options");
        try (var g = ctx.enter("Block.forwardRouted")) {
            checkCall("Block.forwardRouted", x, "x", out, "out");
            MemorySegment n = Tensor.handleOrNull(noise, ctx, "noise");
            MemorySegment i = Tensor.handleOrNull(indices, ctx, "indices");
            MemorySegment c = Tensor.handleOrNull(counts, ctx, "counts");
            options.writeTo(ctx.forwardParams);
            Native.check(hspmn_h.hspmn_block_forward_routed(handle(), ctx.forwardParams, x.handle(), n, i, c,
                    out.handle(), aux.handle()), "hspmn_block_forward_routed");
            return readScalar(aux);
        }
    }

    /** Backward of the last training forward, overwriting the parameter gradients. */
    public void backward(Tensor dOut, float dAuxValue, Tensor dX) {
        backward(dOut, dAuxValue, dX, false);
    }

    /**
     * Backward of the last training forward, routing held fixed.
     *
     * @param dOut       [B, S, D] bf16
     * @param dAuxValue  upstream gradient of the aux loss
     * @param dX         [B, S, D] bf16, written; null when the input gradient is not wanted (first layer)
     * @param accumulate add into the gradients already held instead of overwriting them
     */
    public void backward(Tensor dOut, float dAuxValue, Tensor dX, boolean accumulate) {
        Objects.requireNonNull(dOut, "dOut");
        try (var g = ctx.enter("Block.backward")) {
            checkOpen("Block.backward");
            dOut.checkUsable(ctx, "dOut");
            MemorySegment dx = Tensor.handleOrNull(dX, ctx, "dX");
            ctx.floatBuf.set(ValueLayout.JAVA_FLOAT, 0, dAuxValue);
            Native.check(hspmn_h.hspmn_tensor_copy_in(dAux.handle(), ctx.floatBuf, 4), "hspmn_tensor_copy_in");
            MemorySegment p = ctx.backwardParams;
            hspmn_backward_params.accumulate(p, accumulate ? 1 : 0);
            hspmn_backward_params.reserved(p, 0);
            Native.check(hspmn_h.hspmn_block_backward(handle(), p, dOut.handle(), dAux.handle(), dx),
                    "hspmn_block_backward");
        }
    }

    /**
     * Routing alone.
     *
     * @param x     [B, S, D] bf16
     * @param noise [B, S] f32 or null (training with noise on: drawn from the generator)
     */
    public RouteResult route(Tensor x, Tensor noise, ForwardOptions options) {
        Objects.requireNonNull(x, "x");
        Objects.requireNonNull(options, "options");
        try (var g = ctx.enter("Block.route")) {
            checkOpen("Block.route");
            x.checkUsable(ctx, "x");
            MemorySegment n = Tensor.handleOrNull(noise, ctx, "noise");
            if (x.rank() != 3) {
                throw new InvalidArgumentException(Status.SHAPE, "Block.route: x must be [B, S, D], got " + x);
            }
            long b = x.shape(0);
            long s = x.shape(1);
            MemoryKind mem = x.memory();
            // C = S fits both modes (topk needs C >= k, threshold C == S).
            try (Tensor logits = Tensor.create(ctx, DType.F32, mem, b, s);
                 Tensor probs = Tensor.create(ctx, DType.F32, mem, b, s);
                 Tensor indices = Tensor.create(ctx, DType.I32, mem, b, s);
                 Tensor counts = Tensor.create(ctx, DType.I32, mem, b);
                 Tensor auxOut = Tensor.create(ctx, DType.F32, mem, 1)) {
                options.writeTo(ctx.forwardParams);
                Native.check(hspmn_h.hspmn_block_route(handle(), ctx.forwardParams, x.handle(), n, logits.handle(),
                        probs.handle(), indices.handle(), counts.handle(), auxOut.handle()), "hspmn_block_route");
                int[] cnt = counts.toIntArray();
                int[] idx = indices.toIntArray();
                int[][] perSeq = new int[(int) b][];
                for (int i = 0; i < b; i++) {
                    if (cnt[i] < 0 || cnt[i] > s) {
                        throw new HspmnException(Status.INTERNAL, "Block.route: library returned count " + cnt[i]
                                + " for sequence " + i + " of length " + s, "");
                    }
                    perSeq[i] = java.util.Arrays.copyOfRange(idx, (int) (i * s), (int) (i * s) + cnt[i]);
                }
                return new RouteResult(logits.toFloatArray(), probs.toFloatArray(), perSeq, cnt, auxOut.toFloatArray()[0]);
            }
        }
    }

    /** Frees the two aux tensors once the library has freed the block (which it refuses while graphs hold it). */
    @Override
    void released() {
        aux.close();
        dAux.close();
    }

    private float readScalar(Tensor t) {
        Native.check(hspmn_h.hspmn_tensor_copy_out(t.handle(), ctx.floatBuf, 4), "hspmn_tensor_copy_out");
        return ctx.floatBuf.get(ValueLayout.JAVA_FLOAT, 0);
    }

    @Override
    public String toString() {
        return "Block[D=" + config.dim() + ", H=" + config.numHeads() + ", Hkv=" + config.numKvHeads() + ", "
                + config.routing().jsonName() + ", rho=" + config.sparsityK() + "]" + (isClosed() ? " (closed)" : "");
    }
}
