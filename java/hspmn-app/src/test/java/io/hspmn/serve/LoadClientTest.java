package io.hspmn.serve;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.hspmn.generate.Engine;
import io.hspmn.generate.TinyModels;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The load client of ci/serve-load.sh (and the GPU stage serve_cuda) against the tiny CPU model: 4 streams,
 * its command line, its JSON, and that it counts errors instead of hiding them.
 */
@Timeout(180)
class LoadClientTest {
    @TempDir
    Path dir;

    private static String[] args(Server server, String... more) {
        String[] base = {"--url", server.uri().toString(), "--streams", "4", "--requests", "3", "--new-tokens", "16",
                "--prompt-bytes", "40"};
        String[] a = java.util.Arrays.copyOf(base, base.length + more.length);
        System.arraycopy(more, 0, a, base.length, more.length);
        return a;
    }

    @Test
    void fourStreamsAllTokensMeasuredNoErrors() throws Exception {
        ServerOptions opts = ServerOptions.randomDefaults().withLimits(4096, 128, 64, 8, 4);
        try (Engine engine = Engine.start(() -> TinyModels.cached(52, 4, opts.maxContext()), new Engine.Options(4, 4));
             Server server = Server.start(opts, engine, new JsonObject())) {
            Path json = dir.resolve("logs/serve-load.json");
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            ByteArrayOutputStream err = new ByteArrayOutputStream();
            int rc = LoadClient.run(args(server, "--json", json.toString()), new PrintStream(out, true, StandardCharsets.UTF_8),
                    new PrintStream(err, true, StandardCharsets.UTF_8));
            String line = out.toString(StandardCharsets.UTF_8);
            assertEquals(0, rc, line + err.toString(StandardCharsets.UTF_8));
            System.out.print(line);
            assertTrue(line.startsWith("serve load: 4 streams x 3 requests x 16 tokens: 192 tokens in "), line);
            assertTrue(line.contains("errors 0"), line);
            JsonObject r = JsonParser.parseString(Files.readString(json)).getAsJsonObject();
            assertEquals(0, r.get("errors").getAsInt());
            assertEquals(12, r.get("requests_ok").getAsInt());
            assertEquals(4 * 3 * 16, r.get("tokens").getAsInt());
            JsonObject itl = r.getAsJsonObject("inter_token_ms");
            assertEquals(4 * 3 * 15, itl.get("count").getAsInt(), "one gap per token after the first");
            assertTrue(itl.get("p50").getAsDouble() > 0 && itl.get("p50").getAsDouble() <= itl.get("p99").getAsDouble());
            assertTrue(itl.get("p99").getAsDouble() <= itl.get("max").getAsDouble());
            assertEquals(12, r.getAsJsonObject("first_token_ms").get("count").getAsInt());
            assertTrue(r.get("tokens_per_s").getAsDouble() > 0);
            // the server saw them batched
            JsonObject health = r.getAsJsonObject("server_health");
            assertTrue(health.getAsJsonObject("engine").get("mean_batch").getAsDouble() > 1, health.toString());
        }
    }

    @Test
    void refusedRequestsAreCountedAsErrorsAndFailTheRun() throws Exception {
        ServerOptions opts = ServerOptions.randomDefaults().withLimits(4096, 128, 8, 8, 4);
        try (Engine engine = Engine.start(() -> TinyModels.cached(53, 4, opts.maxContext()), new Engine.Options(4, 4));
             Server server = Server.start(opts, engine, new JsonObject())) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            ByteArrayOutputStream err = new ByteArrayOutputStream();
            // 16 tokens, but the server allows 8: every request gets 400
            int rc = LoadClient.run(args(server, "--warmup", "0"), new PrintStream(out, true, StandardCharsets.UTF_8),
                    new PrintStream(err, true, StandardCharsets.UTF_8));
            assertEquals(1, rc);
            assertTrue(out.toString(StandardCharsets.UTF_8).contains("errors 12"), out.toString(StandardCharsets.UTF_8));
            assertTrue(err.toString(StandardCharsets.UTF_8).contains("status 400"), err.toString(StandardCharsets.UTF_8));
            assertEquals(2, LoadClient.run(new String[] {"--streams", "4"}, new PrintStream(out), new PrintStream(err)),
                    "no --url is a usage error");
        }
    }
}
