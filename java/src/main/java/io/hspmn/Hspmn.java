package io.hspmn;

import io.hspmn.ffi.hspmn_alloc_stats;
import io.hspmn.ffi.hspmn_h;
import io.hspmn.ffi.hspmn_sampling_params;
import io.hspmn.generate.SamplingParams;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/** Library-wide queries. */
public final class Hspmn {
    static {
        NativeLibrary.ensureLoaded(); // before the first binding call: the bindings only look the library up
    }

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

    /**
     * One token per row by the native {@code sample_tokens} op ({@code hspmn_sample}): the definition of
     * {@link io.hspmn.generate.Sampler}, bit for bit, on the context's backend (on CUDA the sampling runs on
     * the GPU and only the ids come back). Row r uses {@code params[r]} and draw {@code draws[r]} (>= 1) of
     * its stream; a {@link io.hspmn.generate.Sampler} whose {@link io.hspmn.generate.Sampler#draws()} is d
     * would use draw d + 1 next. Greedy rows ignore their draw.
     *
     * @param logits {@code [n, V] f32}, V at most {@value io.hspmn.generate.Sampler#MAX_VOCAB}, any memory
     * @param tokens {@code [n] i32}, any memory; written even when a bad row fails the call (that row: -1
     *               NaN, -2 +Infinity, -3 only -Infinity)
     * @throws NonFiniteInputException naming the first row that holds NaN or +Infinity, or only -Infinity
     */
    public static void sample(Context ctx, Tensor logits, SamplingParams[] params, long[] draws, Tensor tokens) {
        try (var g = ctx.enter("sample"); Arena arena = Arena.ofConfined()) {
            logits.checkUsable(ctx, "logits");
            tokens.checkUsable(ctx, "tokens");
            long n = logits.rank() == 2 ? logits.shape(0) : -1;
            if (params.length != n || draws.length != n) {
                throw new IllegalArgumentException("sample: logits " + java.util.Arrays.toString(logits.shape())
                        + " needs shape [n, V] and n params and draws; got " + params.length + " params and "
                        + draws.length + " draws");
            }
            MemorySegment p = hspmn_sampling_params.allocateArray(n, arena);
            for (int r = 0; r < n; r++) {
                MemorySegment e = hspmn_sampling_params.asSlice(p, r);
                hspmn_sampling_params.temperature(e, params[r].temperature());
                hspmn_sampling_params.top_k(e, params[r].topK());
                hspmn_sampling_params.top_p(e, params[r].topP());
                hspmn_sampling_params.reserved(e, 0);
                hspmn_sampling_params.seed(e, params[r].seed());
                hspmn_sampling_params.draw(e, draws[r]);
            }
            Native.check(hspmn_h.hspmn_sample(ctx.handle(), logits.handle(), p, tokens.handle()), "hspmn_sample");
        }
    }
}
