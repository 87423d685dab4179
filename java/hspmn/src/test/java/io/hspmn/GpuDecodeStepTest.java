package io.hspmn;

import io.hspmn.generate.CachedEngine;
import io.hspmn.generate.FinishReason;
import io.hspmn.generate.GenerationRequest;
import io.hspmn.generate.GenerationResult;
import io.hspmn.generate.GenerationSession;
import io.hspmn.generate.Generator;
import io.hspmn.generate.SamplingParams;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The cached engine on CUDA: decode steps replayed from CUDA graphs with the next token sampled on the
 * device. A sequence that asks for log-probabilities is sampled in Java from the step's logits (the
 * Sampler's definition); one that does not, on the device: both give the same tokens, so the device's
 * sampling inside the graph is the Java definition bit for bit. Bad batch sizes are typed errors. Tagged
 * gpu: skipped without CUDA, failing instead under {@code -Pgpu}.
 */
@Tag("gpu")
class GpuDecodeStepTest {
    // widths that are multiples of 32 (the step kernels) and head dim 64 (the compiled attention)
    static final ModelConfig CONFIG = new ModelConfig(256, 2, HspmnConfig.builder().dim(128).numHeads(2).numKvHeads(1)
            .mlpRatio(2).routing(Routing.THRESHOLD).build());

    private static LanguageModel model(Context ctx) {
        LanguageModel m = LanguageModel.create(ctx, CONFIG, 7);
        for (int l = 0; l < CONFIG.numLayers(); l++) {
            m.setParam("blocks." + l + ".router.b", new float[] {0f}); // about half the tokens route
        }
        return m;
    }

    private static List<GenerationRequest> requests(boolean logprobs) {
        SamplingParams[] p = {SamplingParams.greedy(), SamplingParams.temperature(0.9f, 1), new SamplingParams(0.9f, 7, 1f, 2),
                new SamplingParams(0.9f, 0, 0.8f, 3), new SamplingParams(1.3f, 30, 0.9f, 4), SamplingParams.greedy()};
        List<GenerationRequest> r = new ArrayList<>();
        Random rnd = new Random(5);
        for (int i = 0; i < p.length; i++) {
            int[] prompt = new int[i == 5 ? 300 : 3 + 5 * i]; // the last one is prefilled in pieces of 64
            for (int j = 0; j < prompt.length; j++) {
                prompt[j] = rnd.nextInt(256);
            }
            r.add(GenerationRequest.of(prompt, p[i], 40).withLogprobs(logprobs));
        }
        return r;
    }

    private static List<GenerationResult> run(Generator g, List<GenerationRequest> reqs) throws InterruptedException {
        List<GenerationSession> s = new ArrayList<>();
        for (GenerationRequest r : reqs) {
            s.add(g.start(r, null));
        }
        g.runUntilIdle();
        List<GenerationResult> out = new ArrayList<>();
        for (GenerationSession x : s) {
            out.add(x.await());
        }
        return out;
    }

    @Test
    void deviceSamplingInGraphsEqualsJavaSamplingOfTheSameLogits() throws Exception {
        GpuAssumptions.requireCuda();
        try (Context ctx = Context.create(Backend.CUDA)) {
            LanguageModel m = model(ctx);
            try (CachedEngine engine = new CachedEngine(m, 8, 512, false); Generator g = new Generator(engine, 8, 64)) {
                assertArrayEquals(new int[] {1, 2, 4, 8}, engine.capturedBatchSizes(), engine.graphs());
                List<GenerationResult> device = run(g, requests(false));
                List<GenerationResult> java = run(g, requests(true));
                for (int i = 0; i < device.size(); i++) {
                    assertEquals(FinishReason.LENGTH, device.get(i).finishReason(), "request " + i + ": " + device.get(i).error());
                    assertEquals(FinishReason.LENGTH, java.get(i).finishReason(), "request " + i + ": " + java.get(i).error());
                    assertArrayEquals(java.get(i).tokens(), device.get(i).tokens(), "request " + i);
                    for (float lp : java.get(i).logprobs()) {
                        assertTrue(lp <= 0f && Float.isFinite(lp), "log-probability " + lp);
                    }
                }
            }
        }
    }

    @Test
    void batchSizesWithoutAGraphAreTypedErrors() {
        GpuAssumptions.requireCuda();
        try (Context ctx = Context.create(Backend.CUDA)) {
            LanguageModel m = model(ctx);
            try (Decoder dec = m.decoder(40, 64); StepArrays a = new StepArrays(3)) {
                assertThrows(InvalidArgumentException.class, () -> dec.capture(33));
                dec.capture(1, 2);
                for (int j = 0; j < 3; j++) {
                    dec.append(j, 1, 2, 3);
                    a.set(j, j, 4);
                }
                dec.step(a, 2);
                InvalidArgumentException e = assertThrows(InvalidArgumentException.class, () -> dec.step(a, 3));
                assertTrue(e.getMessage().contains("largest captured batch size is 2"), e.getMessage());
                assertEquals(4, dec.length(0));
                assertEquals(3, dec.length(2), "nothing appended by the refused step");
            }
        }
    }
}
