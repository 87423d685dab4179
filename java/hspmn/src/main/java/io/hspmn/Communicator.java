package io.hspmn;

import io.hspmn.ffi.hspmn_comm_params;
import io.hspmn.ffi.hspmn_h;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.HexFormat;
import java.util.Objects;

/**
 * One rank of a group of ranks that reduce together ({@code hspmn_comm}): what a {@link LanguageModel}
 * needs for data-parallel training ({@link LanguageModel#setCommunicator}). Every rank makes its own from
 * its own {@link Context} with the same {@link Params#id() id} and world size; {@link #create} is
 * collective: it returns once every rank has joined (or fails after the timeout).
 *
 * <p>{@link Kind#LOCAL}: the ranks are threads of this process, one context each, on any backend (what
 * the CPU tests and a one-process multi-GPU run without NCCL use). {@link Kind#NCCL}: CUDA contexts, the
 * ranks in this or other processes or hosts; NCCL is opened at run time ({@link #available}).
 *
 * <p>Follows its context's one-thread-at-a-time rule, except {@link #abort()}, which any thread may call
 * at any time: every rank's pending and later collectives then fail with {@link CommunicatorException},
 * so one failed rank stops all instead of leaving them waiting.
 */
public final class Communicator extends NativeHandle {
    /** {@code hspmn_comm_kind}. */
    public enum Kind implements NativeEnum {
        /** Ranks are threads of this process, one context each, any backend. */
        LOCAL,
        /** NVIDIA NCCL: CUDA contexts, ranks in any process on any host. */
        NCCL;

        /** Parses "local" or "nccl" (any case). */
        public static Kind parse(String name) {
            try {
                return valueOf(name.trim().toUpperCase(java.util.Locale.ROOT));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("communicator must be local or nccl, not '" + name + "'");
            }
        }
    }

    /** Bytes of a rendezvous id ({@code HSPMN_COMM_ID_BYTES}). */
    public static final int ID_BYTES = 128;

    /**
     * How one rank joins.
     *
     * @param rank      this rank, in [0, world)
     * @param world     ranks in all, >= 1
     * @param timeoutMs how long create and every collective wait for the other ranks before failing with
     *                  {@link CommunicatorException} (0: the library's default)
     * @param id        {@link #ID_BYTES} bytes from {@link #uniqueId}, the same on every rank
     */
    public record Params(Kind kind, int rank, int world, int timeoutMs, byte[] id) {
        public Params {
            Objects.requireNonNull(kind, "kind");
            Objects.requireNonNull(id, "id");
            if (world < 1) {
                throw new IllegalArgumentException("world (" + world + ") must be >= 1");
            }
            if (rank < 0 || rank >= world) {
                throw new IllegalArgumentException("rank (" + rank + ") must be in [0, " + world + ")");
            }
            if (timeoutMs < 0) {
                throw new IllegalArgumentException("timeoutMs (" + timeoutMs + ") must be >= 0 (0: the library's default)");
            }
            if (id.length != ID_BYTES) {
                throw new IllegalArgumentException("id has " + id.length + " bytes, a communicator id " + ID_BYTES);
            }
            id = id.clone();
        }

        @Override
        public byte[] id() {
            return id.clone();
        }
    }

    /**
     * Keeps {@link #abort()} (any thread) off a communicator being destroyed: abort and destroy take its
     * lock, and a destroyed handle is never aborted.
     */
    private static final class Lifecycle {
        private boolean destroyed;

        synchronized int destroy(MemorySegment h) {
            int status = hspmn_h.hspmn_comm_destroy(h);
            destroyed = status == hspmn_h.HSPMN_OK();
            return status;
        }

        /** Aborts unless destroyed; a failed abort throws its typed exception. */
        synchronized void abort(MemorySegment h) {
            if (!destroyed) {
                Native.check(hspmn_h.hspmn_comm_abort(h), "hspmn_comm_abort");
            }
        }
    }

    private final Lifecycle lifecycle;
    private final Kind kind;
    private final int rank;
    private final int world;

    private Communicator(Context ctx, MemorySegment handle, Lifecycle lifecycle, Params p) {
        super(ctx, handle, "hspmn_comm_destroy", lifecycle::destroy);
        this.lifecycle = lifecycle;
        this.kind = p.kind();
        this.rank = p.rank();
        this.world = p.world();
    }

    /** Whether communicators of {@code kind} can be made here (NCCL: built with CUDA and the library found). */
    public static boolean available(Kind kind) {
        return unavailableReason(kind).isEmpty();
    }

    /** "" when {@link #available}, else the library's reason (NCCL: not built with CUDA, libnccl not found...). */
    public static String unavailableReason(Kind kind) {
        Objects.requireNonNull(kind, "kind");
        NativeLibrary.ensureLoaded();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate(ValueLayout.JAVA_INT);
            Native.check(hspmn_h.hspmn_comm_available(kind.code(), out), "hspmn_comm_available");
            if (out.get(ValueLayout.JAVA_INT, 0) != 0) {
                return "";
            }
            String why = Native.lastError();
            return why.isEmpty() ? kind + " communicators are not available in this build" : why;
        }
    }

    /** A fresh rendezvous id: made by one rank and handed to all (a file, an environment variable). */
    public static byte[] uniqueId(Kind kind) {
        Objects.requireNonNull(kind, "kind");
        NativeLibrary.ensureLoaded();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment out = arena.allocate(ID_BYTES);
            Native.check(hspmn_h.hspmn_comm_unique_id(kind.code(), out), "hspmn_comm_unique_id");
            return out.toArray(ValueLayout.JAVA_BYTE);
        }
    }

    /** An id as lower-case hex (what HSPMN_COMM_ID and a comm-id file hold). */
    public static String idToHex(byte[] id) {
        return HexFormat.of().formatHex(id);
    }

    /** An id from hex, refused when it is not {@link #ID_BYTES} bytes of hex. */
    public static byte[] idFromHex(String hex) {
        String h = Objects.requireNonNull(hex, "hex").strip();
        if (h.length() != 2 * ID_BYTES) {
            throw new IllegalArgumentException("a communicator id is " + 2 * ID_BYTES + " hex digits, got " + h.length());
        }
        try {
            return HexFormat.of().parseHex(h);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("a communicator id is " + 2 * ID_BYTES + " hex digits: " + e.getMessage());
        }
    }

    /**
     * Joins the group: collective, so every rank calls it (each from its own thread or process) and all
     * return together, or fail after the timeout.
     *
     * @throws CommunicatorException     the other ranks did not join in time, or the transport failed
     * @throws BackendUnavailableException NCCL asked for where it is not built or not found
     * @throws InvalidArgumentException  a LOCAL group whose ranks disagree on the world size, NCCL on a CPU context
     */
    public static Communicator create(Context ctx, Params p) {
        Objects.requireNonNull(ctx, "ctx");
        Objects.requireNonNull(p, "params");
        try (var g = ctx.enter("Communicator.create"); Arena arena = Arena.ofConfined()) {
            MemorySegment s = hspmn_comm_params.allocate(arena);
            s.copyFrom(hspmn_h.hspmn_comm_default_params(arena));
            hspmn_comm_params.kind(s, p.kind().code());
            hspmn_comm_params.rank(s, p.rank());
            hspmn_comm_params.world(s, p.world());
            if (p.timeoutMs() > 0) {
                hspmn_comm_params.timeout_ms(s, p.timeoutMs());
            }
            MemorySegment.copy(p.id, 0, hspmn_comm_params.id(s), ValueLayout.JAVA_BYTE, 0, ID_BYTES);
            return ctx.adopt(hspmn_h.hspmn_comm_create(ctx.handle(), s, ctx.pointerOut), "hspmn_comm_create",
                    h -> new Communicator(ctx, h, new Lifecycle(), p));
        }
    }

    public Kind kind() {
        return kind;
    }

    public int rank() {
        return rank;
    }

    public int world() {
        return world;
    }

    /**
     * Fails every rank's pending and later collectives with {@link CommunicatorException}. Any thread,
     * any time (it does not take the context's lock, which a rank waiting in a collective holds); a no-op
     * once the communicator is closed.
     */
    public void abort() {
        MemorySegment h = handle();
        if (h != null) {
            lifecycle.abort(h);
        }
    }

    /**
     * Sums {@code values} over the ranks in place, or averages them with {@code mean}: collective, every
     * rank calls it with as many values, and all get the same result.
     *
     * @throws CommunicatorException aborted, or a rank did not arrive within the timeout
     */
    public void allReduce(float[] values, boolean mean) {
        Objects.requireNonNull(values, "values");
        try (var g = ctx.enter("Communicator.allReduce"); Arena arena = Arena.ofConfined()) {
            checkOpen("Communicator.allReduce");
            if (values.length == 0) {
                return;
            }
            MemorySegment host = arena.allocateFrom(ValueLayout.JAVA_FLOAT, values);
            Native.check(hspmn_h.hspmn_comm_all_reduce_f32(handle(), host, values.length, mean ? 1 : 0),
                    "hspmn_comm_all_reduce_f32");
            MemorySegment.copy(host, ValueLayout.JAVA_FLOAT, 0, values, 0, values.length);
        }
    }

    @Override
    public String toString() {
        return "Communicator[" + kind + ", rank " + rank + " of " + world + (isClosed() ? ", closed" : "") + "]";
    }
}
