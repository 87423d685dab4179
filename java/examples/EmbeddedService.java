import io.hspmn.Backend;
import io.hspmn.Context;
import io.hspmn.ContextOptions;
import io.hspmn.HspmnConfig;
import io.hspmn.LanguageModel;
import io.hspmn.ModelConfig;
import io.hspmn.Routing;
import io.hspmn.checkpoint.Checkpoint;
import io.hspmn.checkpoint.ModelCheckpoint;
import io.hspmn.generate.ByteTokenizer;
import io.hspmn.generate.CachedEngine;
import io.hspmn.generate.Engine;
import io.hspmn.generate.FinishReason;
import io.hspmn.generate.GenerationRequest;
import io.hspmn.generate.GenerationResult;
import io.hspmn.generate.GenerationSession;
import io.hspmn.generate.SamplingParams;
import io.hspmn.io.TensorData;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A service that embeds the library and nothing else: ci/check-library-alone.sh compiles and runs it with
 * only the library's jar and Gson on the class path, so it fails if generation or checkpoint loading needs a
 * class of hspmn-app. It writes a checkpoint of a seeded model (as `hspmn train` would, weights only),
 * loads it back as a service does, and checks that greedy generation from the loaded model gives the same
 * tokens as from the model it was saved from.
 *   usage: java -cp hspmn.jar:gson.jar:. EmbeddedService WORK_DIR
 */
public final class EmbeddedService {
    private static final int NEW_TOKENS = 24;

    public static void main(String[] args) throws Exception {
        Path file = Path.of(args[0]).resolve("model.safetensors");
        ModelConfig config = ModelConfig.byteLevel(2, HspmnConfig.builder().dim(64).numHeads(4).numKvHeads(2)
                .routing(Routing.THRESHOLD).build());
        ContextOptions cpu = ContextOptions.defaults().withBackend(Backend.CPU);

        int[] expected;
        try (Context ctx = Context.create(cpu)) {
            LanguageModel lm = LanguageModel.create(ctx, config, 42L);
            Map<String, TensorData> weights = new LinkedHashMap<>();
            for (String name : lm.paramNames()) {
                weights.put(name, TensorData.f32(lm.paramShape(name), lm.param(name)));
            }
            new Checkpoint(config.toJson(), 0, 0, new long[0], weights, Map.of(), Map.of()).save(file);
            expected = generate(lm, false);
        }

        LanguageModel loaded = ModelCheckpoint.load(Context.create(cpu), file, w -> System.err.println("warning: " + w));
        int[] got = generate(loaded, true);
        if (!Arrays.equals(expected, got)) {
            throw new AssertionError("the loaded model generated " + Arrays.toString(got) + ", the saved one "
                    + Arrays.toString(expected));
        }
        System.out.println("embedded service: " + got.length + " tokens generated from " + file.getFileName()
                + " on the library alone, the same as from the saved model");
    }

    /** Greedy generation of {@link #NEW_TOKENS} bytes after a fixed prompt, through the engine's worker thread. */
    private static int[] generate(LanguageModel lm, boolean ownsModel) throws Exception {
        try (Engine engine = Engine.start(() -> new CachedEngine(lm, 2, 256, ownsModel), Engine.Options.defaults())) {
            int[] prompt = new ByteTokenizer(256).encode("Once upon a time");
            try (GenerationSession s = engine.submit(GenerationRequest.of(prompt, SamplingParams.greedy(), NEW_TOKENS))) {
                GenerationResult r = s.await();
                if (r.finishReason() != FinishReason.LENGTH || r.generatedTokens() != NEW_TOKENS) {
                    throw new AssertionError("generation ended with " + r.finishReason() + " after " + r.generatedTokens()
                            + " tokens, not " + NEW_TOKENS);
                }
                return r.tokens();
            }
        }
    }
}
