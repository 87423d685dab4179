package io.hspmn;

import io.hspmn.ffi.hspmn_backward_params;
import io.hspmn.ffi.hspmn_context_params;
import io.hspmn.ffi.hspmn_forward_params;
import io.hspmn.ffi.hspmn_h;
import io.hspmn.ffi.hspmn_tensor_desc;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A backend instance ({@code hspmn_context}). Tensors, blocks and language models are made from a context
 * and belong to it.
 *
 * <p>One thread at a time: every call on the context or on its tensors and blocks takes the context's
 * lock with {@code tryLock}; a call from a second thread while one is inside fails at once with
 * {@link ConcurrentUseException}. Handing the context from one thread to another between calls is fine.
 * Closing the context closes every graph, block, model and tensor still open from it first.
 */
public final class Context implements AutoCloseable {
    static {
        NativeLibrary.ensureLoaded(); // before the first binding call: the bindings only look the library up
    }

    /** ReentrantLock that can name its owner in the error message. */
    private static final class OwnerLock extends ReentrantLock {
        Thread owner() {
            return getOwner();
        }
    }

    /** Releases the lock; one instance per context suffices because only the owner can hold it. */
    final class Guard implements AutoCloseable {
        @Override
        public void close() {
            lock.unlock();
        }
    }

    private final OwnerLock lock = new OwnerLock();
    private final Guard guard = new Guard();
    private final ContextOptions options;
    private final Backend backend;
    private final Set<NativeHandle> children = new LinkedHashSet<>();
    private volatile MemorySegment handle;

    // Argument structs reused by every call; safe because calls are serialised by the lock.
    private final Arena scratchArena = Arena.ofShared();
    final MemorySegment forwardParams = hspmn_forward_params.allocate(scratchArena);
    final MemorySegment backwardParams = hspmn_backward_params.allocate(scratchArena);
    final MemorySegment desc = hspmn_tensor_desc.allocate(scratchArena);
    final MemorySegment pointerOut = scratchArena.allocate(ValueLayout.ADDRESS);
    final MemorySegment intOut = scratchArena.allocate(ValueLayout.JAVA_INT);
    final MemorySegment longOut = scratchArena.allocate(ValueLayout.JAVA_LONG);
    final MemorySegment floatBuf = scratchArena.allocate(ValueLayout.JAVA_FLOAT);

    private Context(ContextOptions options) {
        this.options = options;
        MemorySegment h;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p = hspmn_context_params.allocate(arena);
            MemorySegment defaults = hspmn_h.hspmn_context_default_params(arena);
            p.copyFrom(defaults);
            hspmn_context_params.backend(p, options.backend().code());
            hspmn_context_params.device(p, options.device());
            hspmn_context_params.num_threads(p, options.numThreads());
            hspmn_context_params.nan_policy(p, options.nanPolicy().code());
            hspmn_context_params.cuda_stream(p, MemorySegment.ofAddress(options.cudaStream()));
            int status = hspmn_h.hspmn_context_create(p, pointerOut);
            if (status != hspmn_h.HSPMN_OK()) {
                scratchArena.close();
                Native.check(status, "hspmn_context_create");
            }
            h = pointerOut.get(ValueLayout.ADDRESS, 0);
        }
        int status = hspmn_h.hspmn_context_backend(h, intOut);
        if (status != hspmn_h.HSPMN_OK()) {
            String msg = Native.lastError();
            hspmn_h.hspmn_context_destroy(h);
            scratchArena.close();
            throw HspmnException.of(Status.of(status), "hspmn_context_backend", msg);
        }
        this.backend = Backend.of(intOut.get(ValueLayout.JAVA_INT, 0));
        this.handle = h;
    }

    /** A context on the best available backend (AUTO). */
    public static Context create() {
        return new Context(ContextOptions.defaults());
    }

    public static Context create(Backend backend) {
        return new Context(ContextOptions.defaults().withBackend(backend));
    }

    public static Context create(ContextOptions options) {
        return new Context(options);
    }

    /** The backend in use (AUTO resolved). */
    public Backend backend() {
        return backend;
    }

    public ContextOptions options() {
        return options;
    }

    public boolean isClosed() {
        return handle == null;
    }

    /**
     * Waits for all queued work of the context: its CUDA stream only (the caller's, with
     * {@link ContextOptions#withCudaStream(long)}), never the whole device; a no-op on the CPU backend.
     */
    public void synchronize() {
        try (var g = enter("Context.synchronize")) {
            Native.check(hspmn_h.hspmn_context_synchronize(handle), "hspmn_context_synchronize");
        }
    }

    /** Memory kind for library-side temporaries: DEVICE on CUDA so no call mixes memory kinds. */
    MemoryKind workMemory() {
        return backend == Backend.CUDA ? MemoryKind.DEVICE : MemoryKind.HOST;
    }

    /**
     * Takes the context's lock for one call; fails fast, never waits, if another thread is inside.
     * Also refuses a closed context, naming the operation.
     */
    Guard enter(String operation) {
        if (!lock.tryLock()) {
            Thread owner = lock.owner();
            throw new ConcurrentUseException(operation + ": the context is in use by thread '"
                    + (owner == null ? "?" : owner.getName()) + "'; a context and its tensors and blocks"
                    + " may be used by one thread at a time", "");
        }
        if (handle == null) {
            lock.unlock();
            throw new IllegalStateException(operation + ": the Context (" + backend + ") is closed");
        }
        return guard;
    }

    MemorySegment handle() {
        return handle;
    }

    void register(NativeHandle child) {
        children.add(child);
    }

    /**
     * The handle a create call of this context just wrote to {@link #pointerOut}, once its status is
     * checked: wrapped and registered, so that closing the context closes it too.
     */
    <T extends NativeHandle> T adopt(int status, String function, java.util.function.Function<MemorySegment, T> wrap) {
        Native.check(status, function);
        T t = wrap.apply(pointerOut.get(ValueLayout.ADDRESS, 0));
        register(t);
        return t;
    }

    void unregister(NativeHandle child) {
        children.remove(child);
    }

    /** Closes the blocks and tensors still open from this context, then the context. Idempotent. */
    @Override
    public void close() {
        if (handle == null) {
            return;
        }
        try (var g = enter("Context.close")) {
            List<NativeHandle> open = new ArrayList<>(children);
            // Graphs and decoders first: they hold blocks, models and tensors, which refuse to close under them.
            for (NativeHandle c : open) {
                if (c instanceof ForwardGraph fg) {
                    fg.close();
                } else if (c instanceof Decoder d) {
                    d.close();
                }
            }
            // Then blocks and models: they own tensors (aux, loss buffers) that they close themselves.
            for (NativeHandle c : open) {
                if (c instanceof Block b) {
                    b.close();
                } else if (c instanceof LanguageModel m) {
                    m.close();
                }
            }
            for (NativeHandle c : new ArrayList<>(children)) {
                try {
                    c.close();
                } catch (RuntimeException e) {
                    throw new IllegalStateException("closing " + c + " failed", e);
                }
            }
            MemorySegment h = handle;
            Native.check(hspmn_h.hspmn_context_destroy(h), "hspmn_context_destroy");
            handle = null;
            scratchArena.close();
        }
    }

    @Override
    public String toString() {
        return "Context[" + backend + (handle == null ? ", closed" : "") + "]";
    }
}
