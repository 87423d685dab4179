package io.hspmn;

import io.hspmn.data.ByteCorpus;
import io.hspmn.data.CorpusSplit;
import io.hspmn.eval.HeldOutEval;
import io.hspmn.eval.HeldOutResult;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * hspmn eval's scoring on CUDA (DEVICE tensors, whole batches, a smaller last batch and a short tail window)
 * equals the CPU backend's on the same weights, to the bf16 precision both keep activations in.
 */
@Tag("gpu")
class GpuHeldOutEvalTest {
    @TempDir
    Path dir;

    @Test
    void cudaScoresTheHeldOutTextAsTheCpuDoes() throws Exception {
        GpuAssumptions.requireCuda();
        // 1,001 held-out bytes at S = 64: 15 whole windows (batches of 4, 4, 4, 3) and one of 40
        byte[] text = Arrays.copyOfRange(Files.readAllBytes(Path.of("..", "..", "data", "corpus.txt")), 20_000, 22_002);
        Path file = dir.resolve("text.txt");
        Files.write(file, text);
        ModelConfig config = ModelConfig.byteLevel(2, HspmnConfig.builder().dim(128).numHeads(2).numKvHeads(1)
                .routing(Routing.THRESHOLD).sparsityK(0.5f).build());
        try (ByteCorpus corpus = ByteCorpus.open(file);
             Context cpu = Context.create(Backend.CPU);
             Context cuda = Context.create(Backend.CUDA);
             LanguageModel a = LanguageModel.create(cpu, config, 3);
             LanguageModel b = LanguageModel.create(cuda, config, 3)) {
            CorpusSplit val = corpus.split(0.5).validation();
            assertEquals(1001, val.size());
            for (int l = 0; l < 2; l++) {
                a.setParam("blocks." + l + ".router.b", new float[] {0f}); // about half the tokens route
            }
            for (String p : a.paramNames()) {
                b.setParam(p, a.param(p));
            }
            HeldOutResult onCpu = HeldOutEval.evaluate(a, val, 64, 4, null);
            HeldOutResult onCuda = HeldOutEval.evaluate(b, val, 64, 4, null);
            System.out.printf("gpu held-out eval: cuda %.6f bits/byte %s, cpu %.6f %s%n", onCuda.bitsPerByte(),
                    Arrays.toString(onCuda.routedFraction()), onCpu.bitsPerByte(), Arrays.toString(onCpu.routedFraction()));
            assertEquals(1000, onCuda.scoredBytes());
            assertEquals(16, onCuda.windows());
            assertEquals(Backend.CUDA, onCuda.backend());
            // bf16 activations on both, float32 sums in other orders: ~1e-3 relative on a mean loss
            assertEquals(onCpu.bitsPerByte(), onCuda.bitsPerByte(), 5e-3 * onCpu.bitsPerByte());
            for (int l = 0; l < 2; l++) {
                double f = onCpu.routedFraction()[l];
                assertTrue(f > 0.1 && f < 0.9, "layer " + l + " routes " + f);
                // a token whose router logit sits within rounding of 0 may flip: a few of 1,000
                assertEquals(f, onCuda.routedFraction()[l], 0.02, "layer " + l);
            }
        }
    }
}
