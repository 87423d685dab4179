package io.hspmn;

import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The golden cases on the CUDA backend, held to MODEL.md's bound for bf16 paths. Tagged gpu: excluded by
 * default; {@code mvn -Pgpu verify} runs it and then a missing backend or device fails instead of skipping.
 */
@Tag("gpu")
class GpuGoldenParityTest {
    @ParameterizedTest(name = "{0}")
    @MethodSource("io.hspmn.GoldenCase#files")
    void matchesReferenceOnCuda(Path file) {
        GpuAssumptions.requireCuda();
        GoldenCase gc = GoldenCase.load(file);
        try {
            Parity.Report r = Parity.run(gc, Backend.CUDA, Parity.Tolerances.bf16Backend());
            System.out.print(r.table());
            assertTrue(r.passed(), () -> gc.name + " on CUDA:\n  " + String.join("\n  ", r.failures()));
        } finally {
            gc.file.close();
        }
    }
}
