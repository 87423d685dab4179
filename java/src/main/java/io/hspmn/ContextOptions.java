package io.hspmn;

import java.util.Objects;

/**
 * How to create a {@link Context}: {@code hspmn_context_params}.
 *
 * @param backend    CPU, CUDA, or AUTO (CUDA when built and a device is present, else CPU)
 * @param device     CUDA device ordinal (ignored by the CPU backend)
 * @param numThreads CPU worker threads; 0 = all hardware threads
 * @param nanPolicy  whether forward/route/backward scan their inputs for NaN/Inf
 */
public record ContextOptions(Backend backend, int device, int numThreads, NanPolicy nanPolicy) {
    public ContextOptions {
        Objects.requireNonNull(backend, "backend");
        Objects.requireNonNull(nanPolicy, "nanPolicy");
        if (device < 0) {
            throw new IllegalArgumentException("device must be >= 0, got " + device);
        }
        if (numThreads < 0) {
            throw new IllegalArgumentException("numThreads must be >= 0 (0 = all hardware threads), got " + numThreads);
        }
    }

    /** AUTO backend, device 0, all hardware threads, NaN inputs rejected: the library's defaults. */
    public static ContextOptions defaults() {
        return new ContextOptions(Backend.AUTO, 0, 0, NanPolicy.REJECT);
    }

    public ContextOptions withBackend(Backend backend) {
        return new ContextOptions(backend, device, numThreads, nanPolicy);
    }

    public ContextOptions withDevice(int device) {
        return new ContextOptions(backend, device, numThreads, nanPolicy);
    }

    public ContextOptions withNumThreads(int numThreads) {
        return new ContextOptions(backend, device, numThreads, nanPolicy);
    }

    public ContextOptions withNanPolicy(NanPolicy nanPolicy) {
        return new ContextOptions(backend, device, numThreads, nanPolicy);
    }
}
