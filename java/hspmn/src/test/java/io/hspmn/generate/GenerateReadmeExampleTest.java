package io.hspmn.generate;

import io.hspmn.ContextOptions;
import io.hspmn.HspmnConfig;
import io.hspmn.ModelConfig;
import io.hspmn.Routing;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** The README's generation example, line for line between the markers, so the docs cannot drift from the API. */
class GenerateReadmeExampleTest {

    @Test
    void readmeExampleRuns() throws Exception {
        GenerationResult kept;
        // README begin
        ModelConfig config = ModelConfig.byteLevel(2, HspmnConfig.builder().dim(64).numHeads(4).numKvHeads(2)
                .routing(Routing.THRESHOLD).build());                            // threshold routing decodes with a cache
        try (Engine engine = Engine.start(() -> new CachedEngine(Models.random(config, 42L, ContextOptions.defaults()),
                8, 1024, true), Engine.Options.defaults())) {                    // one worker thread owns the model
            int[] prompt = new ByteTokenizer(256).encode("Once upon a time");
            SamplingParams sampling = new SamplingParams(0.8f, 40, 0.95f, 7L);  // temperature, top-k, top-p, seed
            try (GenerationSession s = engine.submit(GenerationRequest.of(prompt, sampling, 32))) {
                for (int token : s) {                                            // each token as it is decided
                    System.out.print((char) token);
                }
                GenerationResult r = s.await();                                  // finish reason, tokens, timings
                // README end
                kept = r;
            }
        }
        System.out.println();
        assertEquals(FinishReason.LENGTH, kept.finishReason());
        assertEquals(32, kept.generatedTokens());
    }
}
