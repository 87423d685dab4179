package io.hspmn;

import io.hspmn.ffi.hspmn_alloc_stats;
import io.hspmn.ffi.hspmn_h;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/** Library-wide queries. */
public final class Hspmn {
    private Hspmn() {
    }

    /** {@code hspmn_abi_version()} of the loaded library (checked against the bindings at load). */
    public static int abiVersion() {
        return hspmn_h.hspmn_abi_version();
    }

    public static String version() {
        return Native.string(hspmn_h.hspmn_version_string());
    }

    /** The native name of a status, as the library spells it. */
    public static String statusName(Status status) {
        return Native.string(hspmn_h.hspmn_status_name(status.code()));
    }

    /** Whether the backend was compiled into the library (not whether a device is present). */
    public static boolean backendBuilt(Backend backend) {
        return hspmn_h.hspmn_backend_built(backend.code()) != 0;
    }

    /** Process-wide allocation counters, for leak checks and memory reports. */
    public static AllocStats allocStats() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = hspmn_alloc_stats.allocate(arena);
            Native.check(hspmn_h.hspmn_alloc_stats_get(s), "hspmn_alloc_stats_get");
            return new AllocStats(hspmn_alloc_stats.live_tensors(s), hspmn_alloc_stats.live_blocks(s),
                    hspmn_alloc_stats.live_contexts(s), hspmn_alloc_stats.live_bytes(s),
                    hspmn_alloc_stats.peak_bytes(s));
        }
    }

    public static void resetPeakBytes() {
        Native.check(hspmn_h.hspmn_alloc_stats_reset_peak(), "hspmn_alloc_stats_reset_peak");
    }

    /**
     * The Gumbel noise the generator draws for (seed, step, layer) into {@code out}
     * ({@code out: [B, S] f32}); the same draw a training forward uses when noise is on.
     */
    public static void gumbelNoise(Context ctx, long seed, long step, int layer, Tensor out) {
        try (var g = ctx.enter("gumbelNoise")) {
            out.checkUsable(ctx, "out");
            Native.check(hspmn_h.hspmn_gumbel_noise(ctx.handle(), seed, step, layer, out.handle()),
                    "hspmn_gumbel_noise");
        }
    }
}
