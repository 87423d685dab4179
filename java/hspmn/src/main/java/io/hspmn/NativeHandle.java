package io.hspmn;

import java.lang.foreign.MemorySegment;
import java.util.Objects;

/**
 * A native object made from a {@link Context} (in the spirit of jextract's {@code ClangDisposable}, with an
 * explicit close and no Cleaner): the one place for its handle, the closed check and an idempotent
 * {@link #close()}. Closing lets the library refuse first (a block under a graph, a tensor bound to one or
 * exported, a model with live decoders): then nothing changes and the object stays open. Only after the
 * library has freed it does the handle go, the context forget the object and the object release what it
 * holds on the Java side.
 *
 * <p>{@link Context} is not one: it owns these objects, checks its own state under its lock and closes
 * them before itself.
 */
public abstract sealed class NativeHandle implements AutoCloseable
        permits ParameterHandle, Decoder, ForwardGraph, Tensor, Communicator {
    /** A call of the library on one object, e.g. {@code hspmn_tensor_destroy}. */
    @FunctionalInterface
    interface Op {
        int apply(MemorySegment handle);
    }

    final Context ctx;
    private final String destroyName;
    private final Op destroy;
    private volatile MemorySegment handle;

    /** @param destroyName the function {@code destroy} calls, for messages ({@code hspmn_tensor_destroy}) */
    NativeHandle(Context ctx, MemorySegment handle, String destroyName, Op destroy) {
        this.ctx = Objects.requireNonNull(ctx, "ctx");
        this.handle = Objects.requireNonNull(handle, "handle");
        this.destroyName = destroyName;
        this.destroy = destroy;
    }

    /** The context the object was made from. */
    public final Context context() {
        return ctx;
    }

    public final boolean isClosed() {
        return handle == null;
    }

    /** Throws {@link IllegalStateException} "{@code op}: this is closed" once the object is closed. */
    final void checkOpen(String op) {
        if (handle == null) {
            throw new IllegalStateException(op + ": " + this + " is closed");
        }
    }

    /**
     * The checks before the call {@code op} with two tensor arguments: both given, this object open, both
     * open and made from this object's context.
     */
    final void checkCall(String op, Tensor a, String aName, Tensor b, String bName) {
        Objects.requireNonNull(a, aName);
        Objects.requireNonNull(b, bName);
        checkOpen(op);
        a.checkUsable(ctx, aName);
        b.checkUsable(ctx, bName);
    }

    /** The handle for the call {@code op}, checked open. */
    final MemorySegment handle(String op) {
        MemorySegment h = handle;
        if (h == null) {
            throw new IllegalStateException(op + ": " + this + " is closed");
        }
        return h;
    }

    /** The handle after {@link #checkOpen} (under the context's lock, so it cannot close in between). */
    final MemorySegment handle() {
        return handle;
    }

    /**
     * Frees the native object, then what this holds beside it. Idempotent. When the library refuses
     * (its exception, typically {@link HspmnStateException}), the object stays open.
     */
    @Override
    public final void close() {
        if (handle == null) {
            return;
        }
        try (var g = ctx.enter(getClass().getSimpleName() + ".close")) {
            MemorySegment h = handle;
            if (h == null) {
                return;
            }
            closing();
            Native.check(destroy.apply(h), destroyName);
            handle = null;
            ctx.unregister(this);
            released();
        }
    }

    /** Runs first when the object closes, before the library is asked to free it. */
    void closing() {
    }

    /** Releases what the object holds beside its handle, once the library has freed it. */
    void released() {
    }
}
