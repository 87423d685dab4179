package io.hspmn;

import io.hspmn.ffi.hspmn_h;
import io.hspmn.ffi.hspmn_tensor_desc;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.Objects;
import java.util.function.Consumer;
import java.util.function.Function;

/**
 * A library tensor ({@code hspmn_tensor}): dtype, memory kind and a row-major shape of 1 to 4 extents.
 * Created zero-filled. Belongs to its {@link Context} and follows its one-thread-at-a-time rule.
 */
public final class Tensor extends NativeHandle {
    private final DType dtype;
    private final MemoryKind memory;
    private final long[] shape;
    private final long numel;
    private final long byteSize;
    private Arena viewArena; // created by the first segment() call; closing it invalidates stale views

    private Tensor(Context ctx, DType dtype, MemoryKind memory, long[] shape, MemorySegment handle) {
        super(ctx, handle, "hspmn_tensor_destroy", hspmn_h::hspmn_tensor_destroy);
        this.dtype = dtype;
        this.memory = memory;
        this.shape = shape;
        long n = 1;
        for (long e : shape) {
            n *= e;
        }
        this.numel = n;
        this.byteSize = n * dtype.byteSize();
    }

    /** A zero-filled host tensor. */
    public static Tensor create(Context ctx, DType dtype, long... shape) {
        return create(ctx, dtype, MemoryKind.HOST, shape);
    }

    public static Tensor create(Context ctx, DType dtype, MemoryKind memory, long... shape) {
        Objects.requireNonNull(ctx, "ctx");
        Objects.requireNonNull(dtype, "dtype");
        Objects.requireNonNull(memory, "memory");
        Objects.requireNonNull(shape, "shape");
        if (shape.length < 1 || shape.length > hspmn_h.HSPMN_MAX_DIMS()) {
            throw new InvalidArgumentException(Status.SHAPE, "Tensor.create: a tensor has 1 to "
                    + hspmn_h.HSPMN_MAX_DIMS() + " dimensions, got " + shape.length + " " + Arrays.toString(shape));
        }
        long[] dims = shape.clone();
        try (var g = ctx.enter("Tensor.create"); Arena arena = Arena.ofConfined()) {
            MemorySegment shapeSeg = arena.allocateFrom(ValueLayout.JAVA_LONG, dims);
            return ctx.adopt(hspmn_h.hspmn_tensor_create(ctx.handle(), dtype.code(), memory.code(), dims.length,
                    shapeSeg, ctx.pointerOut), "hspmn_tensor_create", h -> new Tensor(ctx, dtype, memory, dims, h));
        }
    }

    /** A host tensor holding {@code data} (rounded to nearest even for bf16). */
    public static Tensor of(Context ctx, DType dtype, float[] data, long... shape) {
        return filled(create(ctx, dtype, shape), t -> t.copyFrom(data));
    }

    /** A host i32 tensor holding {@code data}. */
    public static Tensor ofInts(Context ctx, int[] data, long... shape) {
        return filled(create(ctx, DType.I32, shape), t -> t.copyFrom(data));
    }

    /** {@code t} once {@code fill} has run on it; closed again when the fill throws (bad data length). */
    private static Tensor filled(Tensor t, Consumer<Tensor> fill) {
        try {
            fill.accept(t);
        } catch (RuntimeException e) {
            t.close();
            throw e;
        }
        return t;
    }

    public long[] shape() {
        return shape.clone();
    }

    public long shape(int dim) {
        return shape[dim];
    }

    public int rank() {
        return shape.length;
    }

    public DType dtype() {
        return dtype;
    }

    public MemoryKind memory() {
        return memory;
    }

    public long numel() {
        return numel;
    }

    public long byteSize() {
        return byteSize;
    }

    /**
     * A zero-copy view of a HOST or PINNED tensor's data. The view dies with the tensor: using it
     * after {@link #close()} throws IllegalStateException instead of touching freed memory.
     * Reading or writing it is the caller's business, under the same one-thread-at-a-time rule.
     */
    public MemorySegment segment() {
        try (var g = ctx.enter("Tensor.segment")) {
            checkOpen("Tensor.segment");
            if (viewArena == null) {
                Native.check(hspmn_h.hspmn_tensor_data(handle(), ctx.pointerOut), "hspmn_tensor_data");
                MemorySegment address = ctx.pointerOut.get(ValueLayout.ADDRESS, 0);
                Arena a = Arena.ofShared();
                view = NativeLibrary.view(address, byteSize, a);
                viewArena = a;
            }
            return view;
        }
    }

    private MemorySegment view;

    /** Copies {@code data} in; bf16 tensors get each value rounded to nearest even. */
    public void copyFrom(float[] data) {
        Objects.requireNonNull(data, "data");
        requireLength(data.length, "copyFrom(float[])");
        if (dtype == DType.I32) {
            throw new InvalidArgumentException(Status.DTYPE, "copyFrom(float[]): " + this + " is i32; use copyFrom(int[])");
        }
        copyIn(arena -> {
            if (dtype == DType.F32) {
                return arena.allocateFrom(ValueLayout.JAVA_FLOAT, data);
            }
            MemorySegment src = arena.allocate(byteSize, 8);
            BFloat16.fromFloat(data, src);
            return src;
        });
    }

    public void copyFrom(int[] data) {
        Objects.requireNonNull(data, "data");
        requireLength(data.length, "copyFrom(int[])");
        if (dtype != DType.I32) {
            throw new InvalidArgumentException(Status.DTYPE, "copyFrom(int[]): " + this + " is not i32; use copyFrom(float[])");
        }
        copyIn(arena -> arena.allocateFrom(ValueLayout.JAVA_INT, data));
    }

    /** Copies in the host bytes {@code stage} makes (in a confined arena that lives for the call). */
    private void copyIn(Function<Arena, MemorySegment> stage) {
        try (var g = ctx.enter("Tensor.copyFrom"); Arena arena = Arena.ofConfined()) {
            checkOpen("Tensor.copyFrom");
            Native.check(hspmn_h.hspmn_tensor_copy_in(handle(), stage.apply(arena), byteSize), "hspmn_tensor_copy_in");
        }
    }

    /** Copies the tensor's bytes out to a host segment and hands it to {@code read} before it is freed. */
    private void copyOut(String op, Consumer<MemorySegment> read) {
        try (var g = ctx.enter("Tensor." + op); Arena arena = Arena.ofConfined()) {
            checkOpen("Tensor." + op);
            MemorySegment dst = arena.allocate(byteSize, 8);
            Native.check(hspmn_h.hspmn_tensor_copy_out(handle(), dst, byteSize), "hspmn_tensor_copy_out");
            read.accept(dst);
        }
    }

    /** Tensor to tensor: same dtype and element count, any memory kinds, same context. */
    public void copyFrom(Tensor src) {
        Objects.requireNonNull(src, "src");
        try (var g = ctx.enter("Tensor.copyFrom")) {
            checkOpen("Tensor.copyFrom");
            src.checkUsable(ctx, "src");
            Native.check(hspmn_h.hspmn_tensor_copy(handle(), src.handle()), "hspmn_tensor_copy");
        }
    }

    /**
     * The length of a Java array holding {@code numel} elements. A Java array has at most
     * {@code Integer.MAX_VALUE - 8} elements (the JVM's own limit), so a larger tensor cannot be copied
     * into one: the message names the way out instead of the bare ArithmeticException of toIntExact.
     */
    static int javaArrayLength(long numel, String op) {
        if (numel > Integer.MAX_VALUE - 8) {
            throw new IllegalStateException(op + ": the tensor has " + numel + " elements, more than a Java array holds ("
                    + (Integer.MAX_VALUE - 8) + "); read it in parts through segment()"
                    + " (a HOST or PINNED tensor; copy a device tensor into one first with copyFrom(Tensor))");
        }
        return (int) numel;
    }

    /**
     * The contents as float32 (bf16 widened exactly).
     *
     * @throws IllegalStateException when the tensor has more elements than a Java array holds (about 2^31)
     */
    public float[] toFloatArray() {
        if (dtype == DType.I32) {
            throw new InvalidArgumentException(Status.DTYPE, "toFloatArray: " + this + " is i32; use toIntArray()");
        }
        float[] out = new float[javaArrayLength(numel, "toFloatArray")];
        copyOut("toFloatArray", dst -> {
            if (dtype == DType.F32) {
                MemorySegment.copy(dst, ValueLayout.JAVA_FLOAT, 0, out, 0, out.length);
            } else {
                BFloat16.toFloat(dst, out);
            }
        });
        return out;
    }

    public int[] toIntArray() {
        if (dtype != DType.I32) {
            throw new InvalidArgumentException(Status.DTYPE, "toIntArray: " + this + " is not i32; use toFloatArray()");
        }
        int[] out = new int[javaArrayLength(numel, "toIntArray")];
        copyOut("toIntArray", dst -> MemorySegment.copy(dst, ValueLayout.JAVA_INT, 0, out, 0, out.length));
        return out;
    }

    /**
     * Exports this tensor through DLPack (hspmn_tensor_to_dlpack): the address of a {@code DLManagedTensor}
     * (DLPack 0.8) that shares this tensor's memory, for a framework that imports DLPack (wrap it in the
     * consumer's capsule or handle). The consumer calls its deleter exactly once when done; until then
     * {@link #close()} throws {@link HspmnStateException} and the tensor stays open. Device tensors are
     * exported as kDLCUDA on the context's device, pinned ones as kDLCUDAHost, host ones as kDLCPU.
     */
    public MemorySegment toDLPack() {
        try (var g = ctx.enter("Tensor.toDLPack")) {
            checkOpen("Tensor.toDLPack");
            Native.check(hspmn_h.hspmn_tensor_to_dlpack(handle(), ctx.pointerOut), "hspmn_tensor_to_dlpack");
            return ctx.pointerOut.get(ValueLayout.ADDRESS, 0);
        }
    }

    /**
     * Imports a DLPack {@code DLManagedTensor} (DLPack 0.8; {@code hspmn_tensor_from_dlpack}) as a tensor over
     * the producer's memory, without a copy: kDLCPU becomes HOST, kDLCUDAHost PINNED, kDLCUDA DEVICE (CUDA
     * context of the same device only); bf16, f32 or i32; compact row-major (strides NULL or compact);
     * 1 to 4 extents of at least 1; data + byte_offset 16-byte aligned.
     *
     * <p>Ownership: when this returns, the tensor owns {@code managedTensor}: {@link #close()} (or closing the
     * context) waits for the context's stream and then calls its deleter, exactly once. When it throws
     * (a typed {@link HspmnException} naming what is wrong), nothing was kept, the deleter was not called,
     * and the caller still owns the managed tensor. The deleter must not call into this context.
     *
     * <p>Streams: the library reads and writes the memory on the context's stream without waiting for the
     * producer; make the producer's writes visible to that stream first (or create the context on the
     * producer's stream, {@link ContextOptions#withCudaStream(long)}).
     *
     * @param managedTensor the address of a {@code DLManagedTensor} (e.g. what a framework's
     *                      {@code to_dlpack} capsule holds, or {@link #toDLPack()} of another tensor)
     */
    public static Tensor fromDLPack(Context ctx, MemorySegment managedTensor) {
        return importDLPack(ctx, managedTensor, false);
    }

    /**
     * {@link #fromDLPack} for DLPack 1.x's {@code DLManagedTensorVersioned}
     * ({@code hspmn_tensor_from_dlpack_versioned}): major version 1, not read-only; same ownership rules.
     */
    public static Tensor fromDLPackVersioned(Context ctx, MemorySegment managedTensor) {
        return importDLPack(ctx, managedTensor, true);
    }

    private static Tensor importDLPack(Context ctx, MemorySegment managed, boolean versioned) {
        Objects.requireNonNull(ctx, "ctx");
        Objects.requireNonNull(managed, "managedTensor");
        String fn = versioned ? "hspmn_tensor_from_dlpack_versioned" : "hspmn_tensor_from_dlpack";
        try (var g = ctx.enter(versioned ? "Tensor.fromDLPackVersioned" : "Tensor.fromDLPack")) {
            Native.check(versioned ? hspmn_h.hspmn_tensor_from_dlpack_versioned(ctx.handle(), managed, ctx.pointerOut)
                    : hspmn_h.hspmn_tensor_from_dlpack(ctx.handle(), managed, ctx.pointerOut), fn);
            MemorySegment h = ctx.pointerOut.get(ValueLayout.ADDRESS, 0);
            // From here the library owns the managed tensor: a failure must destroy h (running the deleter),
            // never hand the managed tensor back half-owned.
            try {
                MemorySegment d = ctx.desc;
                Native.check(hspmn_h.hspmn_tensor_describe(h, d), "hspmn_tensor_describe");
                long[] shape = new long[hspmn_tensor_desc.ndim(d)];
                for (int i = 0; i < shape.length; i++) {
                    shape[i] = hspmn_tensor_desc.shape(d, i);
                }
                Tensor t = new Tensor(ctx, DType.of(hspmn_tensor_desc.dtype(d)),
                        MemoryKind.of(hspmn_tensor_desc.memory(d)), shape, h);
                ctx.register(t);
                return t;
            } catch (RuntimeException e) {
                hspmn_h.hspmn_tensor_destroy(h);
                throw e;
            }
        }
    }

    /**
     * Drops the views of {@link #segment()} before the memory goes (a later segment() makes a new view).
     * Closing then frees the native tensor, except while a {@link ForwardGraph} is bound to it or a
     * {@link #toDLPack()} export has not been released: then the library refuses
     * ({@link HspmnStateException}) and the tensor stays open. A tensor from {@link #fromDLPack} frees
     * nothing itself: it waits for the context's stream and calls the producer's deleter, once.
     */
    @Override
    void closing() {
        if (viewArena != null) {
            viewArena.close();
            viewArena = null;
            view = null;
        }
    }

    /** Float32 work tensors of these shapes in the context's work memory; none stays open when one fails. */
    static Tensor[] work(Context ctx, long[]... shapes) {
        Tensor[] t = new Tensor[shapes.length];
        try {
            for (int i = 0; i < shapes.length; i++) {
                t[i] = create(ctx, DType.F32, ctx.workMemory(), shapes[i]);
            }
            return t;
        } catch (RuntimeException e) {
            for (Tensor made : t) {
                if (made != null) {
                    made.close();
                }
            }
            throw e;
        }
    }

    private void requireLength(int length, String op) {
        if (length != numel) {
            throw new InvalidArgumentException(Status.SHAPE, op + ": " + length + " values for " + this
                    + " of " + numel + " elements");
        }
    }

    /** For use as an argument of a call on {@code owner}: open, and made from the same context. */
    void checkUsable(Context owner, String argument) {
        checkOpen(argument);
        if (ctx != owner) {
            throw new InvalidArgumentException(Status.INVALID_ARGUMENT, argument + ": " + this
                    + " belongs to another context (" + ctx + ")");
        }
    }

    /** The handle of an optional argument: NULL for null. */
    static MemorySegment handleOrNull(Tensor t, Context owner, String argument) {
        if (t == null) {
            return MemorySegment.NULL;
        }
        t.checkUsable(owner, argument);
        return t.handle();
    }

    @Override
    public String toString() {
        return "Tensor" + Arrays.toString(shape) + " " + dtype.name().toLowerCase(java.util.Locale.ROOT) + " "
                + memory.name().toLowerCase(java.util.Locale.ROOT) + (isClosed() ? " (closed)" : "");
    }
}
