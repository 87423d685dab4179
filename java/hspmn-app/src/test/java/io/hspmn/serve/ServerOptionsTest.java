package io.hspmn.serve;

import com.google.gson.JsonObject;
import io.hspmn.Backend;
import io.hspmn.LanguageModel;
import io.hspmn.Routing;
import io.hspmn.Tensor;
import io.hspmn.checkpoint.Checkpoint;
import io.hspmn.generate.Models;
import io.hspmn.generate.TinyModels;
import io.hspmn.io.TensorData;
import io.hspmn.train.Trainer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The command line, and a server on a checkpoint written the way the trainer writes it. */
class ServerOptionsTest {
    @Test
    void parsesOptionsAndRefusesBadOnes() {
        ServerOptions o = ServerOptions.parse(new String[] {"--random", "--port=9000", "--host", "0.0.0.0", "--layers", "3",
                "--routing", "topk", "--engine", "recompute", "--max-new-tokens", "100", "--default-new-tokens", "200",
                "--backend", "cpu", "--max-concurrent", "4", "--max-batch", "2"});
        assertEquals(9000, o.port());
        assertEquals("0.0.0.0", o.host());
        assertEquals(3, o.randomModel().numLayers());
        assertEquals(Routing.TOPK, o.randomModel().block().routing());
        assertEquals(Models.EngineKind.RECOMPUTE, o.engine());
        assertEquals(100, o.defaultNewTokens(), "the default is capped by the limit");
        assertEquals(Backend.CPU, o.backend());
        assertEquals(ServerOptions.defaultRandomModel().numLayers(), ServerOptions.parse(new String[] {"--random"}).randomModel().numLayers());
        assertNull(ServerOptions.parse(new String[] {"--random", "--help"}));
        assertEquals(ServerOptions.DEFAULT_BODY_TIMEOUT_MILLIS, o.bodyTimeoutMillis());
        assertEquals(250, ServerOptions.parse(new String[] {"--random", "--body-timeout-ms", "250"}).bodyTimeoutMillis());
        assertEquals(io.hspmn.generate.Generator.DEFAULT_PREFILL_CHUNK, o.prefillChunk());
        // both options at once, and every with... keeps both
        ServerOptions both = ServerOptions.parse(new String[] {"--random", "--prefill-chunk", "32", "--body-timeout-ms=750"});
        for (ServerOptions w : new ServerOptions[] {both, both.withLimits(4096, 64, 64, 2, 2),
                both.withEngine(Models.EngineKind.RECOMPUTE), both.withRandomModel(ServerOptions.defaultRandomModel(), 3, Backend.CPU, 1)}) {
            assertEquals(32, w.prefillChunk());
            assertEquals(750, w.bodyTimeoutMillis());
        }
        assertEquals(32, both.withBodyTimeout(40).prefillChunk());
        assertEquals(40, both.withBodyTimeout(40).bodyTimeoutMillis());
        ServerOptions defaults = ServerOptions.randomDefaults();
        assertEquals(io.hspmn.generate.Generator.DEFAULT_PREFILL_CHUNK, defaults.prefillChunk());
        assertEquals(ServerOptions.DEFAULT_BODY_TIMEOUT_MILLIS, defaults.bodyTimeoutMillis());
        for (String[] bad : new String[][] {{}, {"--random", "--ckpt", "x"}, {"--random", "--port", "70000"},
                {"--random", "--bogus", "1"}, {"--random", "--port"}, {"--random", "--max-batch", "two"},
                {"--random", "--engine", "fast"}, {"--random", "--heads", "3"}, {"--random", "--max-concurrent", "0"},
                {"--random", "--body-timeout-ms", "0"}, {"--random", "--prefill-chunk", "0"}}) {
            assertThrows(IllegalArgumentException.class, () -> ServerOptions.parse(bad), String.join(" ", bad));
        }
        assertTrue(ServerOptions.USAGE.contains("--ckpt") && ServerOptions.USAGE.contains("/v1/generate"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ServerOptions.parse(new String[] {"--bogus"}));
        assertEquals("unknown option --bogus for 'serve'", e.getMessage());
    }

    @Test
    void servesACheckpointFromARunFolder(@TempDir Path dir) throws Exception {
        // a checkpoint as the trainer lays it out: config, float32 weights by state_dict name, in <out>/checkpoint.safetensors
        LanguageModel lm = TinyModels.create(71);
        int[] prompt = {72, 105, 33};
        float[] expect;
        try {
            Map<String, TensorData> w = new LinkedHashMap<>();
            for (String name : lm.paramNames()) {
                w.put(name, TensorData.f32(lm.paramShape(name), lm.param(name)));
            }
            new Checkpoint(lm.config().toJson(), 5, 0, new long[0], w, Map.of(), Map.of()).save(dir.resolve(Trainer.CHECKPOINT));
            try (Tensor t = Tensor.ofInts(lm.context(), prompt, 1, 3)) {
                expect = lm.logits(t);
            }
        } finally {
            Models.closeWithContext(lm);
        }
        LanguageModel loaded = ModelLoader.load(dir, io.hspmn.ContextOptions.defaults().withBackend(Backend.CPU).withNumThreads(1));
        try (Tensor t = Tensor.ofInts(loaded.context(), prompt, 1, 3)) {
            assertArrayEquals(expect, loaded.logits(t), "the loaded model computes what the saved one did");
        } finally {
            Models.closeWithContext(loaded);
        }
        assertThrows(IllegalArgumentException.class, () -> ModelLoader.resolve(dir.resolve("nothing-here")));
        Files.writeString(dir.resolve("junk.safetensors"), "not a checkpoint");
        assertThrows(RuntimeException.class, () -> ModelLoader.load(dir.resolve("junk.safetensors"),
                io.hspmn.ContextOptions.defaults().withBackend(Backend.CPU)));

        ServerOptions opts = new ServerOptions("127.0.0.1", 0, dir, null, 0, Models.EngineKind.AUTO, Backend.CPU, 1,
                4096, 64, 16, 8, 4, 2);
        try (Server server = Server.start(opts)) {
            Http http = new Http(server.uri());
            JsonObject health = Http.json(http.get("/health"));
            assertEquals("cached", health.getAsJsonObject("model").get("engine").getAsString());
            assertEquals(dir.resolve(Trainer.CHECKPOINT).toString(), health.getAsJsonObject("model").get("source").getAsString());
            Http.Stream s = http.generate("{\"prompt\": \"Hi!\", \"max_new_tokens\": 1, \"temperature\": 0}");
            int best = 0;
            for (int i = 1; i < expect.length; i++) {
                if (expect[i] > expect[best]) {
                    best = i;
                }
            }
            assertEquals(java.util.List.of(best), s.tokens(), "greedy from the checkpoint's logits");
        }
    }
}
