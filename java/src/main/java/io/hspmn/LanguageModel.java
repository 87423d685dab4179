package io.hspmn;

import io.hspmn.ffi.hspmn_adamw_params;
import io.hspmn.ffi.hspmn_adamw_result;
import io.hspmn.ffi.hspmn_h;
import io.hspmn.ffi.hspmn_model_backward_params;
import io.hspmn.ffi.hspmn_model_forward_params;
import io.hspmn.ffi.hspmn_model_params;
import io.hspmn.ffi.hspmn_tensor_desc;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
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
 * closing the context closes the model.
 */
public final class LanguageModel implements AutoCloseable {
    private final Context ctx;
    private final ModelConfig config;
    private final List<String> names;
    private final Map<String, MemorySegment> nameSegments; // the library's name strings, valid while the model lives
    private final Arena arena;                             // argument structs, reused: calls are serialised
    private final MemorySegment forwardParams;
    private final MemorySegment backwardParams;
    private final MemorySegment adamwParams;
    private final MemorySegment adamwResult;
    private final MemorySegment biasFractions;  // [L] f32: routerBiasStep's measured fractions
    private final Tensor loss;  // [2] f32 {loss, ce}
    private final Tensor stats; // [L, 2] f32 {aux, routed fraction} per layer
    private volatile MemorySegment handle;

    private LanguageModel(Context ctx, ModelConfig config, MemorySegment handle, List<String> names,
                          Map<String, MemorySegment> nameSegments, Arena arena, Tensor loss, Tensor stats) {
        this.ctx = ctx;
        this.config = config;
        this.handle = handle;
        this.names = names;
        this.nameSegments = nameSegments;
        this.arena = arena;
        this.forwardParams = hspmn_model_forward_params.allocate(arena);
        this.backwardParams = hspmn_model_backward_params.allocate(arena);
        this.adamwParams = hspmn_adamw_params.allocate(arena);
        this.adamwResult = hspmn_adamw_result.allocate(arena);
        this.biasFractions = arena.allocate(ValueLayout.JAVA_FLOAT, config.numLayers());
        this.loss = loss;
        this.stats = stats;
    }

    /**
     * A model initialised from {@code seed}: embedding U(-1/sqrt(D), 1/sqrt(D)), each layer as
     * {@link Block#create} with a seed drawn from {@code seed}, final norm 1 (hspmn_model_create).
     *
     * @throws InvalidArgumentException for an invalid config, naming the field
     */
    public static LanguageModel create(Context ctx, ModelConfig config, long seed) {
        Objects.requireNonNull(ctx, "ctx");
        Objects.requireNonNull(config, "config");
        config.validate();
        try (var g = ctx.enter("LanguageModel.create")) {
            Arena arena = Arena.ofShared();
            MemorySegment h = null;
            Tensor loss = null;
            Tensor stats = null;
            try {
                MemorySegment p = hspmn_model_params.allocate(arena);
                p.copyFrom(hspmn_h.hspmn_model_default_params(arena));
                config.writeTo(p);
                Native.check(hspmn_h.hspmn_model_create(ctx.handle(), p, seed, ctx.pointerOut), "hspmn_model_create");
                h = ctx.pointerOut.get(ValueLayout.ADDRESS, 0);
                Native.check(hspmn_h.hspmn_model_get_params(h, p), "hspmn_model_get_params");
                ModelConfig held = ModelConfig.readFrom(p);
                Native.check(hspmn_h.hspmn_model_param_count(h, ctx.intOut), "hspmn_model_param_count");
                int n = ctx.intOut.get(ValueLayout.JAVA_INT, 0);
                List<String> names = new ArrayList<>(n);
                Map<String, MemorySegment> segs = new LinkedHashMap<>();
                for (int i = 0; i < n; i++) {
                    Native.check(hspmn_h.hspmn_model_param_name(h, i, ctx.pointerOut), "hspmn_model_param_name");
                    MemorySegment s = ctx.pointerOut.get(hspmn_h.C_POINTER, 0);
                    String name = s.getString(0);
                    names.add(name);
                    segs.put(name, s);
                }
                loss = Tensor.create(ctx, DType.F32, ctx.workMemory(), 2);
                stats = Tensor.create(ctx, DType.F32, ctx.workMemory(), held.numLayers(), 2);
                LanguageModel m = new LanguageModel(ctx, held, h, Collections.unmodifiableList(names), segs, arena,
                        loss, stats);
                ctx.register(m);
                return m;
            } catch (RuntimeException e) {
                if (loss != null) {
                    loss.close();
                }
                if (stats != null) {
                    stats.close();
                }
                if (h != null) {
                    hspmn_h.hspmn_model_destroy(h);
                }
                arena.close();
                throw e;
            }
        }
    }

    /** The configuration as the library holds it. */
    public ModelConfig config() {
        return config;
    }

    public Context context() {
        return ctx;
    }

    public boolean isClosed() {
        return handle == null;
    }

    /** Parameter names in the library's fixed (state_dict) order. */
    public List<String> paramNames() {
        return names;
    }

    /** Shape of a parameter (its master copy is f32). */
    public long[] paramShape(String name) {
        try (var g = ctx.enter("LanguageModel.paramShape"); Arena a = Arena.ofConfined()) {
            checkOpen("LanguageModel.paramShape");
            MemorySegment d = ctx.desc;
            Native.check(hspmn_h.hspmn_model_param_describe(handle, name(name, a), d),
                    "hspmn_model_param_describe(" + name + ")");
            long[] shape = new long[hspmn_tensor_desc.ndim(d)];
            for (int i = 0; i < shape.length; i++) {
                shape[i] = hspmn_tensor_desc.shape(d, i);
            }
            return shape;
        }
    }

    /** The master weight into {@code dst}: f32 exactly, bf16 rounded. */
    public void getParam(String name, Tensor dst) {
        Objects.requireNonNull(dst, "dst");
        try (var g = ctx.enter("LanguageModel.getParam"); Arena a = Arena.ofConfined()) {
            checkOpen("LanguageModel.getParam");
            dst.checkUsable(ctx, "dst");
            Native.check(hspmn_h.hspmn_model_get_param(handle, name(name, a), dst.handle()),
                    "hspmn_model_get_param(" + name + ")");
        }
    }

    /** Sets the master weight from f32 (exact) or bf16 (widened); the bf16 copy is re-rounded from it. */
    public void setParam(String name, Tensor src) {
        Objects.requireNonNull(src, "src");
        try (var g = ctx.enter("LanguageModel.setParam"); Arena a = Arena.ofConfined()) {
            checkOpen("LanguageModel.setParam");
            src.checkUsable(ctx, "src");
            Native.check(hspmn_h.hspmn_model_set_param(handle, name(name, a), src.handle()),
                    "hspmn_model_set_param(" + name + ")");
        }
    }

    /** The float32 master weight, row-major. */
    public float[] param(String name) {
        return readF32("LanguageModel.param", name, this::getParam);
    }

    /** Sets the float32 master weight (row-major, the parameter's element count). */
    public void setParam(String name, float[] values) {
        Objects.requireNonNull(values, "values");
        try (var g = ctx.enter("LanguageModel.setParam");
             Tensor t = Tensor.create(ctx, DType.F32, ctx.workMemory(), paramShape(name))) {
            t.copyFrom(values);
            setParam(name, t);
        }
    }

    /** The gradient (f32 inside) of the last backward(s) into {@code dst}, f32 or bf16. */
    public void getGrad(String name, Tensor dst) {
        Objects.requireNonNull(dst, "dst");
        try (var g = ctx.enter("LanguageModel.getGrad"); Arena a = Arena.ofConfined()) {
            checkOpen("LanguageModel.getGrad");
            dst.checkUsable(ctx, "dst");
            Native.check(hspmn_h.hspmn_model_get_grad(handle, name(name, a), dst.handle()),
                    "hspmn_model_get_grad(" + name + ")");
        }
    }

    public float[] grad(String name) {
        return readF32("LanguageModel.grad", name, this::getGrad);
    }

    public void zeroGrad() {
        try (var g = ctx.enter("LanguageModel.zeroGrad")) {
            checkOpen("LanguageModel.zeroGrad");
            Native.check(hspmn_h.hspmn_model_zero_grad(handle), "hspmn_model_zero_grad");
        }
    }

    /** AdamW's moment of a parameter (f32, its shape; zero until the first step) into {@code dst}. */
    public void getMoment(String name, Moment which, Tensor dst) {
        Objects.requireNonNull(which, "which");
        Objects.requireNonNull(dst, "dst");
        try (var g = ctx.enter("LanguageModel.getMoment"); Arena a = Arena.ofConfined()) {
            checkOpen("LanguageModel.getMoment");
            dst.checkUsable(ctx, "dst");
            Native.check(hspmn_h.hspmn_model_get_moment(handle, name(name, a), which.code(), dst.handle()),
                    "hspmn_model_get_moment(" + name + ", " + which + ")");
        }
    }

    public void setMoment(String name, Moment which, Tensor src) {
        Objects.requireNonNull(which, "which");
        Objects.requireNonNull(src, "src");
        try (var g = ctx.enter("LanguageModel.setMoment"); Arena a = Arena.ofConfined()) {
            checkOpen("LanguageModel.setMoment");
            src.checkUsable(ctx, "src");
            Native.check(hspmn_h.hspmn_model_set_moment(handle, name(name, a), which.code(), src.handle()),
                    "hspmn_model_set_moment(" + name + ", " + which + ")");
        }
    }

    public float[] moment(String name, Moment which) {
        Objects.requireNonNull(which, "which");
        return readF32("LanguageModel.moment", name, (n, t) -> getMoment(n, which, t));
    }

    public void setMoment(String name, Moment which, float[] values) {
        Objects.requireNonNull(values, "values");
        try (var g = ctx.enter("LanguageModel.setMoment");
             Tensor t = Tensor.create(ctx, DType.F32, ctx.workMemory(), paramShape(name))) {
            t.copyFrom(values);
            setMoment(name, which, t);
        }
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
        Objects.requireNonNull(tokens, "tokens");
        Objects.requireNonNull(targets, "targets");
        Objects.requireNonNull(options, "options");
        checkOpen("LanguageModel.forward");
        tokens.checkUsable(ctx, "tokens");
        targets.checkUsable(ctx, "targets");
        options.writeTo(forwardParams);
        Native.check(hspmn_h.hspmn_model_forward(handle, forwardParams, tokens.handle(), targets.handle(),
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
            Native.check(hspmn_h.hspmn_model_backward(handle, backwardParams), "hspmn_model_backward");
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
            Native.check(hspmn_h.hspmn_model_adamw_step(handle, adamwParams, adamwResult), "hspmn_model_adamw_step");
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
            Native.check(hspmn_h.hspmn_model_router_bias_step(handle, target, rate, biasFractions),
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
        Objects.requireNonNull(tokens, "tokens");
        Objects.requireNonNull(out, "out");
        try (var g = ctx.enter("LanguageModel.logits")) {
            checkOpen("LanguageModel.logits");
            tokens.checkUsable(ctx, "tokens");
            out.checkUsable(ctx, "out");
            Native.check(hspmn_h.hspmn_model_logits(handle, tokens.handle(), out.handle()), "hspmn_model_logits");
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

    /** Frees the model: weights, gradients, moments, caches. Idempotent. */
    @Override
    public void close() {
        if (handle == null) {
            return;
        }
        try (var g = ctx.enter("LanguageModel.close")) {
            MemorySegment h = handle;
            if (h == null) {
                return;
            }
            // The library refuses while decoders of the model live: then nothing here changes.
            Native.check(hspmn_h.hspmn_model_destroy(h), "hspmn_model_destroy");
            handle = null;
            ctx.unregister(this);
            loss.close();
            stats.close();
            arena.close();
        }
    }

    private interface Reader {
        void read(String name, Tensor dst);
    }

    private float[] readF32(String op, String name, Reader reader) {
        try (var g = ctx.enter(op); Tensor t = Tensor.create(ctx, DType.F32, ctx.workMemory(), paramShape(name))) {
            reader.read(name, t);
            return t.toFloatArray();
        }
    }

    private MemorySegment name(String name, Arena a) {
        Objects.requireNonNull(name, "name");
        MemorySegment s = nameSegments.get(name);
        // Unknown names still go to the library, which answers NOT_FOUND with its own message.
        return s != null ? s : a.allocateFrom(name);
    }

    /** The native handle, for {@link Decoder}; checks the model is open. */
    MemorySegment handle(String op) {
        checkOpen(op);
        return handle;
    }

    /**
     * A cache for decoding up to {@code maxSeqs} sequences of up to {@code maxLen} tokens each
     * ({@link Decoder}). Needs threshold routing.
     */
    public Decoder decoder(int maxSeqs, long maxLen) {
        return Decoder.create(this, maxSeqs, maxLen);
    }

    private void checkOpen(String op) {
        if (handle == null) {
            throw new IllegalStateException(op + ": " + this + " is closed");
        }
    }

    @Override
    public String toString() {
        return "LanguageModel[V=" + config.vocabSize() + ", L=" + config.numLayers() + ", D=" + config.block().dim()
                + ", " + config.block().routing().jsonName() + "]" + (handle == null ? " (closed)" : "");
    }
}
