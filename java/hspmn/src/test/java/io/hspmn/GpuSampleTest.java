package io.hspmn;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertTrue;

/** The CUDA sample_tokens op (device tensors) returns the Java Sampler's token, bit for bit, in every mode. */
@Tag("gpu")
class GpuSampleTest {
    @Test
    void cudaOpEqualsTheJavaSampler() {
        GpuAssumptions.requireCuda();
        try (Context ctx = Context.create(Backend.CUDA)) {
            int rows = SampleTest.compareAll(ctx, MemoryKind.DEVICE, 22);
            assertTrue(rows > 2800, "rows " + rows);
        }
    }
}
