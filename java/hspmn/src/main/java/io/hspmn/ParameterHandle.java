package io.hspmn;

import io.hspmn.ffi.hspmn_h;
import io.hspmn.ffi.hspmn_tensor_desc;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SegmentAllocator;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.function.BiConsumer;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * A native object with parameters by name, the same for a {@link Block} and a {@link LanguageModel}: the
 * library's names (PyTorch state_dict names, in the library's fixed order; their C strings are kept, so a
 * call passes the library's own pointer), shapes, values and gradients, through a tensor (bf16 or f32, the
 * library converting) or a float32 array. A block holds its parameters in bf16 (float32 values are rounded
 * to nearest even, read back widened exactly); a model holds float32 master weights (exact) and re-rounds
 * the bf16 copies its forward uses from them.
 */
public abstract sealed class ParameterHandle extends NativeHandle permits Block, LanguageModel {
    /** A by-name call on (object, name, tensor or descriptor), e.g. {@code hspmn_block_get_param}. */
    @FunctionalInterface
    interface Call {
        int apply(MemorySegment handle, MemorySegment name, MemorySegment target);
    }

    /** A call that writes one result through {@code out}, e.g. {@code hspmn_block_param_count}. */
    @FunctionalInterface
    interface Out {
        int apply(MemorySegment handle, MemorySegment out);
    }

    @FunctionalInterface
    interface Name {
        int apply(MemorySegment handle, int index, MemorySegment name);
    }

    @FunctionalInterface
    interface Create {
        int apply(MemorySegment ctx, MemorySegment params, long seed, MemorySegment out);
    }

    /** The subclass's constructor, given the new object's handle, names and params as the library holds them. */
    @FunctionalInterface
    interface Wrap<T> {
        T apply(MemorySegment handle, Names names, MemorySegment params);
    }

    /**
     * How the library makes and frees one kind of object.
     *
     * @param prefix   {@code hspmn_block} or {@code hspmn_model}: the functions' common prefix, for messages
     * @param allocate the params struct ({@code hspmn_block_params::allocate})
     * @param defaults the library's default params
     */
    record Kind(String prefix, Function<SegmentAllocator, MemorySegment> allocate,
                Function<SegmentAllocator, MemorySegment> defaults, Create create, Out getParams, Op destroy) {
    }

    /** The library's by-name functions for one kind of object. */
    record ByName(Out count, Name name, Call describe, Call get, Call set, Call getGrad, Op zeroGrad) {
        /** The names of an object made a moment ago, inside the caller's {@code enter}. */
        Names names(Context ctx, MemorySegment handle, String prefix) {
            Native.check(count.apply(handle, ctx.intOut), prefix + "_param_count");
            int n = ctx.intOut.get(ValueLayout.JAVA_INT, 0);
            List<String> list = new ArrayList<>(n);
            Map<String, MemorySegment> segments = new LinkedHashMap<>();
            for (int i = 0; i < n; i++) {
                Native.check(name.apply(handle, i, ctx.pointerOut), prefix + "_param_name");
                MemorySegment s = ctx.pointerOut.get(hspmn_h.C_POINTER, 0);
                String text = s.getString(0);
                list.add(text);
                segments.put(text, s);
            }
            return new Names(Collections.unmodifiableList(list), segments);
        }
    }

    /** The names in order, and the library's C string of each (valid while the object lives). */
    record Names(List<String> list, Map<String, MemorySegment> segments) {
    }

    private final String prefix;
    private final ByName natives;
    private final Names names;

    ParameterHandle(Context ctx, MemorySegment handle, Kind kind, ByName natives, Names names) {
        super(ctx, handle, kind.prefix() + "_destroy", kind.destroy());
        this.prefix = kind.prefix();
        this.natives = natives;
        this.names = names;
    }

    /**
     * Makes an object: the params struct from the library's defaults and {@code write}, the native
     * object, the params as the library holds them (read back into the struct for {@code wrap}), its
     * names; then registers what {@code wrap} builds. When anything after the native call fails, the
     * native object is destroyed.
     */
    static <T extends ParameterHandle> T create(Context ctx, String op, Kind kind, ByName natives,
                                                Consumer<MemorySegment> write, long seed, Wrap<T> wrap) {
        Objects.requireNonNull(ctx, "ctx");
        try (var g = ctx.enter(op); Arena arena = Arena.ofConfined()) {
            MemorySegment p = kind.allocate().apply(arena);
            p.copyFrom(kind.defaults().apply(arena));
            write.accept(p);
            Native.check(kind.create().apply(ctx.handle(), p, seed, ctx.pointerOut), kind.prefix() + "_create");
            MemorySegment h = ctx.pointerOut.get(ValueLayout.ADDRESS, 0);
            try {
                Native.check(kind.getParams().apply(h, p), kind.prefix() + "_get_params");
                T t = wrap.apply(h, natives.names(ctx, h, kind.prefix()), p);
                ctx.register(t);
                return t;
            } catch (RuntimeException e) {
                kind.destroy().apply(h);
                throw e;
            }
        }
    }

    /** Parameter names (PyTorch state_dict names) in the library's fixed order. */
    public final List<String> paramNames() {
        return names.list();
    }

    /** The shape of parameter {@code name}. */
    public final long[] paramShape(String name) {
        return shape(op("paramShape"), name);
    }

    /** Copies parameter {@code name} into {@code dst}, of its shape, bf16 or f32. */
    public final void getParam(String name, Tensor dst) {
        copy("getParam", "_get_param(" + name + ")", name, dst, "dst", natives.get());
    }

    /** Parameter {@code name} as float32, row-major. */
    public final float[] param(String name) {
        return read(op("param"), name, this::getParam);
    }

    /** Sets parameter {@code name} from {@code src}, of its shape, bf16 or f32. */
    public final void setParam(String name, Tensor src) {
        copy("setParam", "_set_param(" + name + ")", name, src, "src", natives.set());
    }

    /** Sets parameter {@code name} from float32 values (row-major, its element count). */
    public final void setParam(String name, float[] values) {
        write(op("setParam"), name, values, this::setParam);
    }

    /** Copies the gradient of parameter {@code name} (held in f32) into {@code dst}, bf16 or f32. */
    public final void getGrad(String name, Tensor dst) {
        copy("getGrad", "_get_grad(" + name + ")", name, dst, "dst", natives.getGrad());
    }

    /** The gradient of parameter {@code name} (of the last backward or backwards) as float32, row-major. */
    public final float[] grad(String name) {
        return read(op("grad"), name, this::getGrad);
    }

    /** Sets every gradient to zero. */
    public final void zeroGrad() {
        String op = op("zeroGrad");
        try (var g = ctx.enter(op)) {
            Native.check(natives.zeroGrad().apply(handle(op)), prefix + "_zero_grad");
        }
    }

    /** {@code ClassName.method}, the operation as messages name it. */
    final String op(String method) {
        return getClass().getSimpleName() + "." + method;
    }

    final long[] shape(String op, String name) {
        try (var g = ctx.enter(op); Arena arena = Arena.ofConfined()) {
            checkOpen(op);
            MemorySegment d = ctx.desc;
            Native.check(natives.describe().apply(handle(), segment(name, arena), d),
                    prefix + "_param_describe(" + name + ")");
            long[] shape = new long[hspmn_tensor_desc.ndim(d)];
            for (int i = 0; i < shape.length; i++) {
                shape[i] = hspmn_tensor_desc.shape(d, i);
            }
            return shape;
        }
    }

    /**
     * One by-name copy between the library and {@code tensor}.
     *
     * @param method   this class's method, for the operation's name
     * @param function the native call after the prefix, as messages name it, e.g. {@code _get_param(router.w)}
     * @param argument the tensor's name in messages ({@code dst} or {@code src})
     */
    final void copy(String method, String function, String name, Tensor tensor, String argument, Call call) {
        Objects.requireNonNull(tensor, argument);
        String op = op(method);
        try (var g = ctx.enter(op); Arena arena = Arena.ofConfined()) {
            checkOpen(op);
            tensor.checkUsable(ctx, argument);
            Native.check(call.apply(handle(), segment(name, arena), tensor.handle()), prefix + function);
        }
    }

    /** What {@code into} copies out of the library, through a float32 work tensor of the parameter's shape. */
    final float[] read(String op, String name, BiConsumer<String, Tensor> into) {
        try (var g = ctx.enter(op); Tensor t = Tensor.create(ctx, DType.F32, ctx.workMemory(), shape(op, name))) {
            into.accept(name, t);
            return t.toFloatArray();
        }
    }

    /** Hands {@code values} (row-major, the parameter's element count) to {@code from} in a float32 work tensor. */
    final void write(String op, String name, float[] values, BiConsumer<String, Tensor> from) {
        Objects.requireNonNull(values, "values");
        try (var g = ctx.enter(op); Tensor t = Tensor.create(ctx, DType.F32, ctx.workMemory(), shape(op, name))) {
            t.copyFrom(values);
            from.accept(name, t);
        }
    }

    private MemorySegment segment(String name, Arena arena) {
        Objects.requireNonNull(name, "name");
        MemorySegment s = names.segments().get(name);
        // Unknown names still go to the library, which answers NOT_FOUND with its own message.
        return s != null ? s : arena.allocateFrom(name);
    }
}
