package io.hspmn;

import io.hspmn.ffi.hspmn_adamw_params;
import io.hspmn.ffi.hspmn_adamw_result;
import io.hspmn.ffi.hspmn_data_parallel_params;
import io.hspmn.ffi.hspmn_data_parallel_stats;
import io.hspmn.ffi.hspmn_h;
import io.hspmn.ffi.hspmn_model_backward_params;
import io.hspmn.ffi.hspmn_model_forward_params;
import io.hspmn.ffi.hspmn_model_params;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import java.util.Objects;

/**
 * A language model ({@code hspmn_model}): embedding [V, D], {@code L} HSPMN blocks, final RMSNorm and a
 * head tied to the embedding, with float32 master weights (what AdamW updates and checkpoints hold),
 * the bf16 copies the forward computes with, gradients and AdamW moments.
 *
 * <p>One training step, as the reference's {@code train_step} does it: for each micro-batch a of A,
 * {@link #forward} with {@link ModelForwardOptions#training} at noise step {@code step * A + a}, then
 * {@link #backward}{@code (1f / A, a > 0)}; then {@link #adamwStep} with {@code step + 1}.
 *
 * <p>Parameters are named as in the PyTorch state_dict ({@code embedding}, {@code blocks.{i}.<block
 * name>}, {@code norm}). Belongs to its {@link Context} and follows its one-thread-at-a-time rule;
 * closing the context closes the model. Closing it frees weights, gradients, moments and caches; the
 * library refuses while decoders of the model live, and then the model stays open.
 */
public final class LanguageModel extends ParameterHandle {
    private static final Kind KIND = new Kind("hspmn_model", hspmn_model_params::allocate,
            hspmn_h::hspmn_model_default_params, hspmn_h::hspmn_model_create, hspmn_h::hspmn_model_get_params,
            hspmn_h::hspmn_model_destroy);
    private static final ByName BY_NAME = new ByName(hspmn_h::hspmn_model_param_count, hspmn_h::hspmn_model_param_name,
            hspmn_h::hspmn_model_param_describe, hspmn_h::hspmn_model_get_param, hspmn_h::hspmn_model_set_param,
            hspmn_h::hspmn_model_get_grad, hspmn_h::hspmn_model_zero_grad);

    private final Tensor loss;  // [2] f32 {loss, ce}
    private final Tensor stats; // [L, 2] f32 {aux, routed fraction} per layer
    private final ModelConfig config;
    private final Arena arena;  // argument structs, reused: calls are serialised
    private final MemorySegment forwardParams;
    private final MemorySegment backwardParams;
    private final MemorySegment adamwParams;
    private final MemorySegment adamwResult;
    private final MemorySegment biasFractions;  // [L] f32: routerBiasStep's measured fractions
    private volatile Communicator comm;         // data-parallel group, or null

    private LanguageModel(Context ctx, ModelConfig config, MemorySegment handle, Names names) {
        super(ctx, handle, KIND, BY_NAME, names);
        Tensor[] work = Tensor.work(ctx, new long[] {2}, new long[] {config.numLayers(), 2});
        this.loss = work[0];
        this.stats = work[1];
        this.config = config;
        this.arena = Arena.ofShared();
        this.forwardParams = hspmn_model_forward_params.allocate(arena);
        this.backwardParams = hspmn_model_backward_params.allocate(arena);
        this.adamwParams = hspmn_adamw_params.allocate(arena);
        this.adamwResult = hspmn_adamw_result.allocate(arena);
        this.biasFractions = arena.allocate(ValueLayout.JAVA_FLOAT, config.numLayers());
    }

    /**
     * A model initialised from {@code seed}: embedding U(-1/sqrt(D), 1/sqrt(D)), each layer as
     * {@link Block#create} with a seed drawn from {@code seed}, final norm 1 (hspmn_model_create).
     *
     * @throws InvalidArgumentException for an invalid config, naming the field
     */
    public static LanguageModel create(Context ctx, ModelConfig config, long seed) {
        Objects.requireNonNull(config, "config").validate();
        return create(ctx, "LanguageModel.create", KIND, BY_NAME, config::writeTo, seed,
                (h, names, p) -> new LanguageModel(ctx, ModelConfig.readFrom(p), h, names));
    }

    // ---- data parallel ---------------------------------------------------------------------------

    /**
     * Makes this model one rank of a data-parallel group (hspmn_model_set_comm): every rank holds the
     * same model (same seed or checkpoint) and trains on its own rows of the global batch. Then
     * {@link #backward} averages the gradients over the ranks (in buckets of about {@code bucketBytes},
     * reduced while the backward goes on), {@link #adamwStep} keeps the weights identical on every rank,
     * {@link #routerBiasStep} averages its measured fractions, and {@link #getMoment} / {@link #moment}
     * become collective (every rank calls them in the same order and gets the whole moment);
     * {@link #setMoment} still takes the whole moment. With {@code shardOptimizer} (ZeRO-1) each rank
     * keeps the AdamW moments of its share of the parameters only.
     *
     * @param comm        a communicator made from this model's context, or null to train alone again
     * @param bucketBytes gradient bytes per all-reduce bucket; 0 for the library's default
     * @throws InvalidArgumentException comm from another context, bucketBytes < 0
     */
    public void setCommunicator(Communicator comm, long bucketBytes, boolean shardOptimizer) {
        if (bucketBytes < 0) {
            throw new InvalidArgumentException(Status.INVALID_ARGUMENT, "LanguageModel.setCommunicator: bucketBytes ("
                    + bucketBytes + ") must be >= 0 (0: the library's default)");
        }
        try (var g = ctx.enter("LanguageModel.setCommunicator"); Arena a = Arena.ofConfined()) {
            checkOpen("LanguageModel.setCommunicator");
            if (comm != null) {
                comm.checkOpen("LanguageModel.setCommunicator");
                if (comm.context() != ctx) {
                    throw new InvalidArgumentException(Status.INVALID_ARGUMENT, "LanguageModel.setCommunicator: " + comm
                            + " belongs to another context than " + this);
                }
            }
            MemorySegment p = hspmn_data_parallel_params.allocate(a);
            p.copyFrom(hspmn_h.hspmn_data_parallel_default_params(a));
            if (bucketBytes > 0) {
                hspmn_data_parallel_params.bucket_bytes(p, bucketBytes);
            }
            hspmn_data_parallel_params.shard_optimizer(p, shardOptimizer ? 1 : 0);
            Native.check(hspmn_h.hspmn_model_set_comm(handle(), comm == null ? MemorySegment.NULL : comm.handle(), p),
                    "hspmn_model_set_comm");
            this.comm = comm;
        }
    }

    /**
     * The communicator's counters: buckets and bytes per backward, the last backward's all-reduce time
     * and how much of it overlapped the backward (all zero without a communicator).
     */
    public DataParallelStats dataParallelStats() {
        try (var g = ctx.enter("LanguageModel.dataParallelStats"); Arena a = Arena.ofConfined()) {
            checkOpen("LanguageModel.dataParallelStats");
            MemorySegment out = hspmn_data_parallel_stats.allocate(a);
            Native.check(hspmn_h.hspmn_model_data_parallel_stats(handle(), out), "hspmn_model_data_parallel_stats");
            return new DataParallelStats(hspmn_data_parallel_stats.backwards(out), hspmn_data_parallel_stats.buckets(out),
                    hspmn_data_parallel_stats.bytes(out), hspmn_data_parallel_stats.all_reduce_ms(out),
                    hspmn_data_parallel_stats.overlapped_ms(out));
        }
    }

    /** The communicator of {@link #setCommunicator}, or null. */
    public Communicator communicator() {
        return comm;
    }

    /** The configuration as the library holds it. */
    public ModelConfig config() {
        return config;
    }

    /** AdamW's moment of a parameter (f32, its shape; zero until the first step) into {@code dst}. */
    public void getMoment(String name, Moment which, Tensor dst) {
        Objects.requireNonNull(which, "which");
        copy("getMoment", "_get_moment(" + name + ", " + which + ")", name, dst, "dst",
                (h, n, t) -> hspmn_h.hspmn_model_get_moment(h, n, which.code(), t));
    }

    public void setMoment(String name, Moment which, Tensor src) {
        Objects.requireNonNull(which, "which");
        copy("setMoment", "_set_moment(" + name + ", " + which + ")", name, src, "src",
                (h, n, t) -> hspmn_h.hspmn_model_set_moment(h, n, which.code(), t));
    }

    public float[] moment(String name, Moment which) {
        Objects.requireNonNull(which, "which");
        return read(op("moment"), name, (n, t) -> getMoment(n, which, t));
    }

    public void setMoment(String name, Moment which, float[] values) {
        Objects.requireNonNull(which, "which");
        write(op("setMoment"), name, values, (n, t) -> setMoment(n, which, t));
    }

    /**
     * Next-token loss of a batch, read back: on CUDA this waits for the GPU (see
     * {@link #forward(Tensor, Tensor, Tensor, Tensor, ModelForwardOptions)} for the form that does not).
     *
     * @param tokens  [B, S] i32 in [0, V)
     * @param targets [B, S] i32 in [0, V); targets[b, s] is the token after tokens[b, s]
     */
    public LossResult forward(Tensor tokens, Tensor targets, ModelForwardOptions options) {
        try (var g = ctx.enter("LanguageModel.forward")) {
            forwardInto(tokens, targets, loss, stats, options);
            float[] l = loss.toFloatArray();
            float[] s = stats.toFloatArray();
            int layers = config.numLayers();
            float[] aux = new float[layers];
            float[] routed = new float[layers];
            for (int i = 0; i < layers; i++) {
                aux[i] = s[2 * i];
                routed[i] = s[2 * i + 1];
            }
            return new LossResult(l[0], l[1], aux, routed);
        }
    }

    /**
     * Forward that leaves its results in the caller's tensors (either may be null) without reading
     * them back.
     *
     * @param lossOut  [2] f32 {loss, mean cross-entropy} or null
     * @param statsOut [L, 2] f32 per layer {aux, routed fraction} or null
     */
    public void forward(Tensor tokens, Tensor targets, Tensor lossOut, Tensor statsOut, ModelForwardOptions options) {
        try (var g = ctx.enter("LanguageModel.forward")) {
            if (lossOut != null) {
                lossOut.checkUsable(ctx, "loss");
            }
            if (statsOut != null) {
                statsOut.checkUsable(ctx, "stats");
            }
            forwardInto(tokens, targets, lossOut, statsOut, options);
        }
    }

    private void forwardInto(Tensor tokens, Tensor targets, Tensor lossOut, Tensor statsOut, ModelForwardOptions options) {
        Objects.requireNonNull(options, "options");
        checkCall("LanguageModel.forward", tokens, "tokens", targets, "targets");
        options.writeTo(forwardParams);
        Native.check(hspmn_h.hspmn_model_forward(handle(), forwardParams, tokens.handle(), targets.handle(),
                lossOut == null ? MemorySegment.NULL : lossOut.handle(),
                statsOut == null ? MemorySegment.NULL : statsOut.handle()), "hspmn_model_forward");
    }

    /**
     * Backward of the last training forward, routing held fixed.
     *
     * @param lossScale  gradients of {@code lossScale * loss} (1 / micro-batches to average them)
     * @param accumulate add into the gradients held (micro-batches after the first) instead of overwriting
     */
    public void backward(float lossScale, boolean accumulate) {
        try (var g = ctx.enter("LanguageModel.backward")) {
            checkOpen("LanguageModel.backward");
            hspmn_model_backward_params.loss_scale(backwardParams, lossScale);
            hspmn_model_backward_params.accumulate(backwardParams, accumulate ? 1 : 0);
            Native.check(hspmn_h.hspmn_model_backward(handle(), backwardParams), "hspmn_model_backward");
        }
    }

    /**
     * One AdamW step on the held gradients (kept afterwards): global norm, clipping, the update of the
     * master weights and moments, re-rounded bf16 copies. A non-finite norm changes nothing and reports
     * {@code applied = false}.
     */
    public AdamwResult adamwStep(AdamwOptions options) {
        Objects.requireNonNull(options, "options");
        try (var g = ctx.enter("LanguageModel.adamwStep")) {
            checkOpen("LanguageModel.adamwStep");
            options.writeTo(adamwParams);
            Native.check(hspmn_h.hspmn_model_adamw_step(handle(), adamwParams, adamwResult), "hspmn_model_adamw_step");
            return new AdamwResult(hspmn_adamw_result.grad_norm(adamwResult), hspmn_adamw_result.applied(adamwResult) != 0);
        }
    }

    /**
     * Router bias control (threshold routing; native/README.md "Router bias control"), after an applied
     * {@link #adamwStep}: each layer's {@code router.b} moves by {@code rate} toward routing
     * {@code target} of the tokens without noise, judged by the share of tokens with a positive router
     * logit over the training forwards of the step (hspmn_model_router_bias_step).
     *
     * @param target the step's aux target (rho_target), in [0, 1]
     * @param rate   the bias step, >= 0
     * @return each layer's measured noise-free fraction (the value the rule compared with {@code target})
     * @throws HspmnStateException       no training forward since the last call
     * @throws InvalidArgumentException  top-k routing, or target / rate out of range
     */
    public float[] routerBiasStep(float target, float rate) {
        try (var g = ctx.enter("LanguageModel.routerBiasStep")) {
            checkOpen("LanguageModel.routerBiasStep");
            Native.check(hspmn_h.hspmn_model_router_bias_step(handle(), target, rate, biasFractions),
                    "hspmn_model_router_bias_step");
            return biasFractions.toArray(ValueLayout.JAVA_FLOAT);
        }
    }

    /**
     * Inference forward; the logits of the last position of each sequence into {@code out}.
     *
     * @param tokens [B, S] i32 in [0, V)
     * @param out    [B, V] f32
     */
    public void logits(Tensor tokens, Tensor out) {
        try (var g = ctx.enter("LanguageModel.logits")) {
            checkCall("LanguageModel.logits", tokens, "tokens", out, "out");
            Native.check(hspmn_h.hspmn_model_logits(handle(), tokens.handle(), out.handle()), "hspmn_model_logits");
        }
    }

    /** The logits of the last position of each sequence, row-major [B, V]. */
    public float[] logits(Tensor tokens) {
        Objects.requireNonNull(tokens, "tokens");
        if (tokens.rank() != 2) {
            throw new InvalidArgumentException(Status.SHAPE, "LanguageModel.logits: tokens must be [B, S], got " + tokens);
        }
        try (var g = ctx.enter("LanguageModel.logits");
             Tensor out = Tensor.create(ctx, DType.F32, ctx.workMemory(), tokens.shape(0), config.vocabSize())) {
            logits(tokens, out);
            return out.toFloatArray();
        }
    }

    /** Frees the loss buffers and argument structs once the library has freed the model. */
    @Override
    void released() {
        loss.close();
        stats.close();
        arena.close();
    }

    /**
     * A cache for decoding up to {@code maxSeqs} sequences of up to {@code maxLen} tokens each
     * ({@link Decoder}). Needs threshold routing.
     */
    public Decoder decoder(int maxSeqs, long maxLen) {
        return Decoder.create(this, maxSeqs, maxLen);
    }

    @Override
    public String toString() {
        return "LanguageModel[V=" + config.vocabSize() + ", L=" + config.numLayers() + ", D=" + config.block().dim()
                + ", " + config.block().routing().jsonName() + "]" + (isClosed() ? " (closed)" : "");
    }
}
