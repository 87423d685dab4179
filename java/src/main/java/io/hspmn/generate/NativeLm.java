package io.hspmn.generate;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import io.hspmn.Backend;
import io.hspmn.BackendUnavailableException;
import io.hspmn.DType;
import io.hspmn.HspmnConfig;
import io.hspmn.HspmnException;
import io.hspmn.HspmnStateException;
import io.hspmn.InvalidArgumentException;
import io.hspmn.NativeLibrary;
import io.hspmn.NativeOutOfMemoryException;
import io.hspmn.Routing;
import io.hspmn.Status;
import io.hspmn.checkpoint.Checkpoint;
import io.hspmn.ffi.hspmn_block_params;
import io.hspmn.ffi.hspmn_context_params;
import io.hspmn.ffi.hspmn_h;
import io.hspmn.io.TensorData;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SegmentAllocator;
import java.lang.foreign.StructLayout;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;

/**
 * ADAPTER, to be replaced: the language-model calls that generation and scoring need
 * ({@code hspmn_model_create / set_param / logits / forward} and host tensors), made with this class's
 * own FFM downcalls because the Java bindings of {@code hspmn_model_*} and {@code io.hspmn.LanguageModel}
 * are not on main yet. Nothing else in io.hspmn.generate or io.hspmn.serve makes a native call, so moving
 * to LanguageModel changes this file alone (its public surface mirrors LanguageModel's).
 *
 * <p>Owns one native context and one model. Not thread-safe: like every native context it may be used by
 * one thread at a time (the library answers BUSY otherwise); {@link Engine} gives it to one worker thread.
 */
@SuppressWarnings("restricted")
public final class NativeLm implements AutoCloseable {

    /**
     * The model configuration: the checkpoint config JSON of the reference ({@code hspmn_lm.LMConfig}):
     * {@code {"vocab_size": V, "num_layers": L, "block": {...}}}; other top-level keys are ignored.
     * (Stands in for io.hspmn.ModelConfig until that lands.)
     */
    public record Spec(int vocabSize, int numLayers, HspmnConfig block) {
        public Spec {
            Objects.requireNonNull(block, "block");
        }

        /** A byte-level model (V = 256) with causal (threshold) routing, as hspmn_model_default_params. */
        public static Spec byteLevel(int numLayers, HspmnConfig block) {
            return new Spec(256, numLayers, block);
        }

        public Spec validate() {
            if (vocabSize < 2 || vocabSize > 65536) {
                throw new InvalidArgumentException(Status.INVALID_ARGUMENT, "vocab_size (" + vocabSize + ") must be in [2, 65536]");
            }
            if (numLayers < 1 || numLayers > 1024) {
                throw new InvalidArgumentException(Status.INVALID_ARGUMENT, "num_layers (" + numLayers + ") must be in [1, 1024]");
            }
            block.validate();
            return this;
        }

        public JsonObject toJsonObject() {
            JsonObject o = new JsonObject();
            o.addProperty("vocab_size", vocabSize);
            o.addProperty("num_layers", numLayers);
            o.add("block", JsonParser.parseString(block.toJson()));
            return o;
        }

        public static Spec fromJson(String json) {
            JsonElement e;
            try {
                e = JsonParser.parseString(json);
            } catch (JsonParseException ex) {
                throw new InvalidArgumentException(Status.INVALID_ARGUMENT, "model config JSON does not parse: " + ex.getMessage());
            }
            if (!(e instanceof JsonObject o)) {
                throw new InvalidArgumentException(Status.INVALID_ARGUMENT, "model config JSON must be an object");
            }
            if (!(o.get("block") instanceof JsonObject b)) {
                throw new InvalidArgumentException(Status.INVALID_ARGUMENT, "model config: \"block\" is missing or not an object");
            }
            return new Spec(intField(o, "vocab_size"), intField(o, "num_layers"), HspmnConfig.fromJson(b.toString())).validate();
        }

        private static int intField(JsonObject o, String k) {
            if (!(o.get(k) instanceof JsonPrimitive p && p.isNumber())) {
                throw new InvalidArgumentException(Status.INVALID_ARGUMENT, "model config: \"" + k + "\" is missing or not a number");
            }
            try {
                return new BigDecimal(p.getAsString()).intValueExact();
            } catch (ArithmeticException | NumberFormatException ex) {
                throw new InvalidArgumentException(Status.INVALID_ARGUMENT, "model config: \"" + k + "\" must be a 32-bit integer, got " + p);
            }
        }
    }

    /** A PINNED tensor of this model's context (plain host memory on the CPU backend) with its data view. */
    public final class HostTensor implements AutoCloseable {
        private MemorySegment handle;
        private final Arena view;
        private final MemorySegment data;
        private final long[] shape;
        private final DType dtype;

        private HostTensor(MemorySegment handle, Arena view, MemorySegment data, DType dtype, long[] shape) {
            this.handle = handle;
            this.view = view;
            this.data = data;
            this.dtype = dtype;
            this.shape = shape;
        }

        /** The tensor's memory, zero-copy; using it after {@link #close()} throws instead of touching freed memory. */
        public MemorySegment segment() {
            return data;
        }

        public long[] shape() {
            return shape.clone();
        }

        public DType dtype() {
            return dtype;
        }

        MemorySegment handle() {
            if (handle == null) {
                throw new IllegalStateException("tensor " + Arrays.toString(shape) + " is closed");
            }
            return handle;
        }

        @Override
        public void close() {
            if (handle != null) {
                MemorySegment h = handle;
                handle = null;
                tensors.remove(this);
                view.close();
                check(hspmn_h.hspmn_tensor_destroy(h), "hspmn_tensor_destroy");
            }
        }
    }

    // hspmn_model_params { int32 vocab_size; int32 num_layers; hspmn_block_params block; }
    private static final StructLayout MODEL_PARAMS = MemoryLayout.structLayout(
            ValueLayout.JAVA_INT.withName("vocab_size"), ValueLayout.JAVA_INT.withName("num_layers"),
            hspmn_block_params.layout().withName("block"));
    private static final long MODEL_PARAMS_BLOCK = MODEL_PARAMS.byteOffset(MemoryLayout.PathElement.groupElement("block"));
    // hspmn_model_forward_params { int32 training; int32 noise; uint64 seed; int64 step; float aux_target; int32 reserved; }
    private static final StructLayout FORWARD_PARAMS = MemoryLayout.structLayout(
            ValueLayout.JAVA_INT.withName("training"), ValueLayout.JAVA_INT.withName("noise"),
            ValueLayout.JAVA_LONG.withName("seed"), ValueLayout.JAVA_LONG.withName("step"),
            ValueLayout.JAVA_FLOAT.withName("aux_target"), ValueLayout.JAVA_INT.withName("reserved"));

    private static final class Calls {
        static final MethodHandle DEFAULT_PARAMS = handle("hspmn_model_default_params", FunctionDescriptor.of(MODEL_PARAMS));
        static final MethodHandle CREATE = handle("hspmn_model_create", FunctionDescriptor.of(ValueLayout.JAVA_INT,
                ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.JAVA_LONG, ValueLayout.ADDRESS));
        static final MethodHandle DESTROY = handle("hspmn_model_destroy", FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS));
        static final MethodHandle GET_PARAMS = handle("hspmn_model_get_params", FunctionDescriptor.of(ValueLayout.JAVA_INT,
                ValueLayout.ADDRESS, ValueLayout.ADDRESS));
        static final MethodHandle PARAM_COUNT = handle("hspmn_model_param_count", FunctionDescriptor.of(ValueLayout.JAVA_INT,
                ValueLayout.ADDRESS, ValueLayout.ADDRESS));
        static final MethodHandle PARAM_NAME = handle("hspmn_model_param_name", FunctionDescriptor.of(ValueLayout.JAVA_INT,
                ValueLayout.ADDRESS, ValueLayout.JAVA_INT, ValueLayout.ADDRESS));
        static final MethodHandle SET_PARAM = handle("hspmn_model_set_param", FunctionDescriptor.of(ValueLayout.JAVA_INT,
                ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.ADDRESS));
        static final MethodHandle FORWARD_DEFAULTS = handle("hspmn_model_forward_default_params", FunctionDescriptor.of(FORWARD_PARAMS));
        static final MethodHandle FORWARD = handle("hspmn_model_forward", FunctionDescriptor.of(ValueLayout.JAVA_INT,
                ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.ADDRESS,
                ValueLayout.ADDRESS));
        static final MethodHandle LOGITS = handle("hspmn_model_logits", FunctionDescriptor.of(ValueLayout.JAVA_INT,
                ValueLayout.ADDRESS, ValueLayout.ADDRESS, ValueLayout.ADDRESS));

        private static MethodHandle handle(String name, FunctionDescriptor fd) {
            MemorySegment addr = NativeLibrary.lookup().find(name)
                    .orElseThrow(() -> new UnsatisfiedLinkError("libhspmn has no " + name + " (loaded from "
                            + NativeLibrary.source() + ")"));
            return Linker.nativeLinker().downcallHandle(addr, fd);
        }
    }

    private final Spec spec;
    private final Backend backend;
    private final Arena arena = Arena.ofShared();
    private final MemorySegment pointerOut = arena.allocate(ValueLayout.ADDRESS);
    private final MemorySegment forwardParams = arena.allocate(FORWARD_PARAMS);
    private final Set<HostTensor> tensors = Collections.synchronizedSet(new LinkedHashSet<>());
    private final List<String> paramNames;
    private MemorySegment ctx;
    private MemorySegment model;

    private NativeLm(Spec spec, Backend backend, int numThreads, long seed) {
        spec.validate();
        MemorySegment c = MemorySegment.NULL;
        MemorySegment m = MemorySegment.NULL;
        try {
            MemorySegment cp = hspmn_context_params.allocate(arena);
            cp.copyFrom(hspmn_h.hspmn_context_default_params(arena));
            hspmn_context_params.backend(cp, backend.code());
            hspmn_context_params.num_threads(cp, numThreads);
            check(hspmn_h.hspmn_context_create(cp, pointerOut), "hspmn_context_create");
            c = pointerOut.get(ValueLayout.ADDRESS, 0);
            MemorySegment intOut = arena.allocate(ValueLayout.JAVA_INT);
            check(hspmn_h.hspmn_context_backend(c, intOut), "hspmn_context_backend");
            this.backend = Backend.of(intOut.get(ValueLayout.JAVA_INT, 0));

            MemorySegment mp = (MemorySegment) Calls.DEFAULT_PARAMS.invokeExact((SegmentAllocator) arena);
            mp.set(ValueLayout.JAVA_INT, 0, spec.vocabSize());
            mp.set(ValueLayout.JAVA_INT, 4, spec.numLayers());
            spec.block().writeTo(mp.asSlice(MODEL_PARAMS_BLOCK, hspmn_block_params.layout().byteSize()));
            check((int) Calls.CREATE.invokeExact(c, mp, seed, pointerOut), "hspmn_model_create");
            m = pointerOut.get(ValueLayout.ADDRESS, 0);
            check((int) Calls.GET_PARAMS.invokeExact(m, mp), "hspmn_model_get_params");
            this.spec = new Spec(mp.get(ValueLayout.JAVA_INT, 0), mp.get(ValueLayout.JAVA_INT, 4),
                    HspmnConfig.readFrom(mp.asSlice(MODEL_PARAMS_BLOCK, hspmn_block_params.layout().byteSize())));
            check((int) Calls.PARAM_COUNT.invokeExact(m, intOut), "hspmn_model_param_count");
            int n = intOut.get(ValueLayout.JAVA_INT, 0);
            List<String> names = new ArrayList<>(n);
            for (int i = 0; i < n; i++) {
                check((int) Calls.PARAM_NAME.invokeExact(m, i, pointerOut), "hspmn_model_param_name");
                names.add(pointerOut.get(hspmn_h.C_POINTER, 0).getString(0));
            }
            this.paramNames = List.copyOf(names);
            MemorySegment fp = (MemorySegment) Calls.FORWARD_DEFAULTS.invokeExact((SegmentAllocator) arena);
            forwardParams.copyFrom(fp);
            forwardParams.set(ValueLayout.JAVA_INT, 0, 0); // training = 0: no noise, nothing kept
            this.ctx = c;
            this.model = m;
        } catch (Throwable t) {
            destroyQuietly(m, c);
            arena.close();
            throw rethrow(t);
        }
    }

    /** A model with parameters initialised from {@code seed} (hspmn_model_create). */
    public static NativeLm create(Spec spec, long seed, Backend backend, int numThreads) {
        return new NativeLm(spec, backend, numThreads, seed);
    }

    /**
     * A model holding a checkpoint's weights: the config from its metadata, every model parameter from the
     * tensor of the same state_dict name (f32 or bf16). Missing, misshapen or extra weights are refused.
     */
    public static NativeLm load(Checkpoint ckpt, Backend backend, int numThreads) {
        Spec spec = Spec.fromJson(ckpt.configJson());
        NativeLm lm = new NativeLm(spec, backend, numThreads, 0L);
        try {
            Map<String, TensorData> w = ckpt.weights();
            for (String name : lm.paramNames) {
                TensorData t = w.get(name);
                if (t == null) {
                    throw new InvalidArgumentException(Status.NOT_FOUND, "checkpoint has no weight '" + name + "'");
                }
                DType dtype = switch (t.dtype()) {
                    case F32 -> DType.F32;
                    case BF16 -> DType.BF16;
                    default -> throw new InvalidArgumentException(Status.DTYPE, "checkpoint weight '" + name + "' is "
                            + t.dtype() + ", not f32 or bf16");
                };
                try (HostTensor h = lm.tensor(dtype, t.shape())) {
                    h.segment().copyFrom(t.bytes());
                    lm.setParam(name, h);
                }
            }
            for (String name : w.keySet()) {
                if (!lm.paramNames.contains(name)) {
                    throw new InvalidArgumentException(Status.NOT_FOUND, "checkpoint weight '" + name + "' is not a parameter of " + spec);
                }
            }
            return lm;
        } catch (RuntimeException e) {
            lm.close();
            throw e;
        }
    }

    /** The configuration as the library holds it. */
    public Spec spec() {
        return spec;
    }

    public int vocabSize() {
        return spec.vocabSize();
    }

    public int numLayers() {
        return spec.numLayers();
    }

    public Routing routing() {
        return spec.block().routing();
    }

    /** The backend in use (AUTO resolved). */
    public Backend backend() {
        return backend;
    }

    public List<String> paramNames() {
        return paramNames;
    }

    /** A zero-filled PINNED tensor; close it (or the model) to free it. */
    public HostTensor tensor(DType dtype, long... shape) {
        requireOpen();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment s = a.allocateFrom(ValueLayout.JAVA_LONG, shape);
            check(hspmn_h.hspmn_tensor_create(ctx, dtype.code(), hspmn_h.HSPMN_MEMORY_PINNED(), shape.length, s, pointerOut),
                    "hspmn_tensor_create");
        }
        MemorySegment h = pointerOut.get(ValueLayout.ADDRESS, 0);
        long bytes = dtype.byteSize();
        for (long e : shape) {
            bytes *= e;
        }
        int st = hspmn_h.hspmn_tensor_data(h, pointerOut);
        if (st != hspmn_h.HSPMN_OK()) {
            String msg = lastError();
            hspmn_h.hspmn_tensor_destroy(h);
            throw error(st, "hspmn_tensor_data", msg);
        }
        Arena view = Arena.ofShared();
        MemorySegment data = pointerOut.get(ValueLayout.ADDRESS, 0).reinterpret(bytes, view, null);
        HostTensor t = new HostTensor(h, view, data, dtype, shape.clone());
        tensors.add(t);
        return t;
    }

    /** Sets a master weight from an f32 or bf16 tensor of its shape (hspmn_model_set_param). */
    public void setParam(String name, HostTensor src) {
        requireOpen();
        try (Arena a = Arena.ofConfined()) {
            check((int) Calls.SET_PARAM.invokeExact(model, a.allocateFrom(name), src.handle()), "hspmn_model_set_param");
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * Inference forward; logits of the last position of each row (hspmn_model_logits).
     *
     * @param tokens [B, S] i32 in [0, V)
     * @param out    [B, V] f32
     */
    public void logits(HostTensor tokens, HostTensor out) {
        requireOpen();
        try {
            check((int) Calls.LOGITS.invokeExact(model, tokens.handle(), out.handle()), "hspmn_model_logits");
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    /**
     * Inference forward (no noise, nothing kept) for the loss and per-layer routing (hspmn_model_forward).
     *
     * @param tokens  [B, S] i32
     * @param targets [B, S] i32 or null
     * @param loss    [2] f32 or null (needs targets): {CE + sum of aux, CE}
     * @param stats   [L, 2] f32 or null: per layer {aux, routed fraction}
     */
    public void forward(HostTensor tokens, HostTensor targets, HostTensor loss, HostTensor stats) {
        requireOpen();
        MemorySegment tok = tokens.handle();
        MemorySegment tgt = targets == null ? MemorySegment.NULL : targets.handle();
        MemorySegment lossH = loss == null ? MemorySegment.NULL : loss.handle();
        MemorySegment statsH = stats == null ? MemorySegment.NULL : stats.handle();
        try {
            check((int) Calls.FORWARD.invokeExact(model, forwardParams, tok, tgt, lossH, statsH), "hspmn_model_forward");
        } catch (Throwable t) {
            throw rethrow(t);
        }
    }

    public boolean isClosed() {
        return model == null;
    }

    /** Frees the tensors still open, the model and the context. Idempotent. */
    @Override
    public void close() {
        if (model == null) {
            return;
        }
        for (HostTensor t : new ArrayList<>(tensors)) {
            t.close();
        }
        MemorySegment m = model;
        MemorySegment c = ctx;
        model = null;
        ctx = null;
        try {
            check((int) Calls.DESTROY.invokeExact(m), "hspmn_model_destroy");
        } catch (Throwable t) {
            hspmn_h.hspmn_context_destroy(c);
            arena.close();
            throw rethrow(t);
        }
        check(hspmn_h.hspmn_context_destroy(c), "hspmn_context_destroy");
        arena.close();
    }

    @Override
    public String toString() {
        return "NativeLm[" + backend + ", V=" + spec.vocabSize() + ", L=" + spec.numLayers() + ", D=" + spec.block().dim()
                + ", " + spec.block().routing().jsonName() + (model == null ? ", closed" : "") + "]";
    }

    private void requireOpen() {
        if (model == null) {
            throw new IllegalStateException("the model is closed");
        }
    }

    private static void destroyQuietly(MemorySegment m, MemorySegment c) {
        try {
            if (!m.equals(MemorySegment.NULL)) {
                int ignored = (int) Calls.DESTROY.invokeExact(m);
            }
        } catch (Throwable ignored) {
            // already failing; the first error is the one to report
        }
        if (!c.equals(MemorySegment.NULL)) {
            hspmn_h.hspmn_context_destroy(c);
        }
    }

    private static String lastError() {
        MemorySegment s = hspmn_h.hspmn_last_error();
        return s.equals(MemorySegment.NULL) ? "" : s.getString(0);
    }

    private static void check(int status, String function) {
        if (status != hspmn_h.HSPMN_OK()) {
            throw error(status, function, lastError());
        }
    }

    private static HspmnException error(int code, String function, String nativeMessage) {
        Status status = Status.of(code);
        String msg = function + " failed: " + status + (nativeMessage.isEmpty() ? "" : ": " + nativeMessage);
        return switch (status) {
            case INVALID_ARGUMENT, SHAPE, DTYPE, MEMORY_KIND, NOT_FOUND -> new InvalidArgumentException(status, msg, nativeMessage);
            case NOT_BUILT, NO_DEVICE -> new BackendUnavailableException(status, msg, nativeMessage);
            case STATE -> new HspmnStateException(msg, nativeMessage);
            case OUT_OF_MEMORY -> new NativeOutOfMemoryException(msg, nativeMessage);
            default -> new HspmnException(status, msg, nativeMessage);
        };
    }

    private static RuntimeException rethrow(Throwable t) {
        if (t instanceof RuntimeException r) {
            throw r;
        }
        if (t instanceof Error e) {
            throw e;
        }
        throw new IllegalStateException(t);
    }
}
