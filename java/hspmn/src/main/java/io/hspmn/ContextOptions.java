package io.hspmn;

import java.util.Objects;

/**
 * How to create a {@link Context}: {@code hspmn_context_params}.
 *
 * @param backend    CPU, CUDA, or AUTO (CUDA when built and a device is present, else CPU)
 * @param device     CUDA device ordinal (ignored by the CPU backend)
 * @param numThreads CPU worker threads; 0 = all hardware threads
 * @param nanPolicy  whether forward/route/backward scan their inputs for NaN/Inf
 * @param cudaStream the address of a {@code cudaStream_t} of {@code device} that every op of the context is
 *                   queued on, or 0 (the default) for a stream of the library's own; see
 *                   {@link #withCudaStream(long)}
 */
public record ContextOptions(Backend backend, int device, int numThreads, NanPolicy nanPolicy, long cudaStream) {
    /** {@code cudaStreamLegacy}: the legacy default stream (PyTorch's default stream, which reports 0). */
    public static final long CUDA_STREAM_LEGACY = 1L;
    /** {@code cudaStreamPerThread}: the calling thread's default stream. */
    public static final long CUDA_STREAM_PER_THREAD = 2L;

    public ContextOptions {
        Objects.requireNonNull(backend, "backend");
        Objects.requireNonNull(nanPolicy, "nanPolicy");
        if (device < 0) {
            throw new IllegalArgumentException("device must be >= 0, got " + device);
        }
        if (numThreads < 0) {
            throw new IllegalArgumentException("numThreads must be >= 0 (0 = all hardware threads), got " + numThreads);
        }
        if (cudaStream != 0 && backend == Backend.CPU) {
            throw new IllegalArgumentException("cudaStream is set but backend is CPU: a CUDA stream needs CUDA or AUTO");
        }
    }

    /** Options on the library's own stream. */
    public ContextOptions(Backend backend, int device, int numThreads, NanPolicy nanPolicy) {
        this(backend, device, numThreads, nanPolicy, 0L);
    }

    /** AUTO backend, device 0, all hardware threads, NaN inputs rejected, the library's own stream: the defaults. */
    public static ContextOptions defaults() {
        return new ContextOptions(Backend.AUTO, 0, 0, NanPolicy.REJECT, 0L);
    }

    public ContextOptions withBackend(Backend backend) {
        return new ContextOptions(backend, device, numThreads, nanPolicy, cudaStream);
    }

    public ContextOptions withDevice(int device) {
        return new ContextOptions(backend, device, numThreads, nanPolicy, cudaStream);
    }

    public ContextOptions withNumThreads(int numThreads) {
        return new ContextOptions(backend, device, numThreads, nanPolicy, cudaStream);
    }

    public ContextOptions withNanPolicy(NanPolicy nanPolicy) {
        return new ContextOptions(backend, device, numThreads, nanPolicy, cudaStream);
    }

    /**
     * Runs every op of the context on a caller's CUDA stream ({@code hspmn_context_params.cuda_stream}), so the
     * library's work is ordered with other work on that stream without a device-wide synchronisation;
     * {@link Context#synchronize()} then waits for that stream only. The stream must belong to {@code device}
     * (checked when the context is created) and outlive the context; the library never destroys it. 0 means
     * the library's own stream (the default); {@link #CUDA_STREAM_LEGACY} and {@link #CUDA_STREAM_PER_THREAD}
     * name the CUDA default streams. A stream makes the context CUDA-only: AUTO does not fall back to the CPU.
     *
     * @param cudaStream the {@code cudaStream_t} as an address (e.g. {@code torch.cuda.Stream().cuda_stream})
     */
    public ContextOptions withCudaStream(long cudaStream) {
        return new ContextOptions(backend, device, numThreads, nanPolicy, cudaStream);
    }
}
