package io.hspmn.serve;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import io.hspmn.generate.Engine;
import io.hspmn.generate.GenerationRequest;
import io.hspmn.generate.GenerationResult;
import io.hspmn.generate.SamplingParams;
import io.hspmn.generate.TinyModels;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.io.InputStream;
import java.net.Socket;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

@Timeout(180)
class ServerTest {
    static final ServerOptions OPTIONS = ServerOptions.randomDefaults().withLimits(4096, 256, 64, 8, 8);
    static Engine engine;
    static Server server;
    static Http http;

    @BeforeAll
    static void start() {
        engine = Engine.start(() -> TinyModels.cached(41, 8, OPTIONS.maxContext()), new Engine.Options(8, 0));
        JsonObject model = new JsonObject();
        model.addProperty("name", "tiny test model");
        server = Server.start(OPTIONS, engine, model);
        http = new Http(server.uri());
    }

    @AfterAll
    static void stop() {
        server.close();
        engine.close();
    }

    private static String gen(String prompt, int n, long seed, double temperature) {
        JsonObject o = new JsonObject();
        o.addProperty("prompt", prompt);
        o.addProperty("max_new_tokens", n);
        o.addProperty("seed", seed);
        o.addProperty("temperature", temperature);
        return o.toString();
    }

    private static void assertServes() throws Exception {
        Http.Stream s = http.generate(gen("still here?", 3, 1, 0));
        assertEquals(200, s.status());
        assertEquals("done", s.last().name());
        assertEquals(3, s.tokens().size());
    }

    private static void assertError(HttpResponse<String> r, int status, String messagePart) {
        assertEquals(status, r.statusCode(), r.body());
        JsonObject e = Http.json(r).getAsJsonObject("error");
        assertEquals(status, e.get("status").getAsInt());
        String m = e.get("message").getAsString();
        assertTrue(m.contains(messagePart), "message '" + m + "' lacks '" + messagePart + "'");
    }

    @Test
    void concurrentStreamsMatchTheEngineAndEachOther() throws Exception {
        int n = 8;
        ExecutorService pool = Executors.newFixedThreadPool(n);
        List<Future<Http.Stream>> fs = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            String body = gen("prompt number " + i, 10 + i, 1000 + i, i % 2 == 0 ? 0.0 : 0.9);
            fs.add(pool.submit(() -> http.generate(body)));
        }
        for (int i = 0; i < n; i++) {
            Http.Stream s = fs.get(i).get(120, TimeUnit.SECONDS);
            assertEquals(200, s.status());
            List<Http.Event> ev = s.events();
            for (int k = 0; k < ev.size() - 1; k++) {
                assertEquals("token", ev.get(k).name());
                assertEquals(k, ev.get(k).data().get("index").getAsInt());
            }
            JsonObject done = s.last().data();
            assertEquals("done", s.last().name());
            assertEquals("length", done.get("finish_reason").getAsString());
            assertEquals(10 + i, done.get("completion_tokens").getAsInt());
            assertEquals(("prompt number " + i).length(), done.get("prompt_tokens").getAsInt());
            assertEquals(1000 + i, done.get("seed").getAsLong());
            assertTrue(done.get("time_to_first_token_ms").getAsDouble() >= 0);
            // the service streams exactly what the engine generates for the same request
            GenerationRequest same = GenerationRequest.of(toIds("prompt number " + i),
                    new SamplingParams(i % 2 == 0 ? 0f : 0.9f, 0, 1f, 1000 + i), 10 + i);
            GenerationResult direct = engine.submit(same).await();
            assertEquals(boxed(direct.tokens()), s.tokens(), "request " + i);
        }
        pool.shutdown();
        // a seed reproduces its stream
        assertEquals(http.generate(gen("again", 12, 77, 1.0)).tokens(), http.generate(gen("again", 12, 77, 1.0)).tokens());
    }

    private static int[] toIds(String s) {
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        int[] ids = new int[b.length];
        for (int i = 0; i < b.length; i++) {
            ids[i] = b[i] & 0xff;
        }
        return ids;
    }

    private static List<Integer> boxed(int[] a) {
        List<Integer> l = new ArrayList<>();
        for (int v : a) {
            l.add(v);
        }
        return l;
    }

    @Test
    void stopStringsEndTheStream() throws Exception {
        // a random model emits mostly non-ASCII bytes: find a seeded output with an ASCII byte to stop on
        for (long seed = 0; seed < 200; seed++) {
            List<Integer> t = http.generate(gen("stop test", 24, seed, 1.0)).tokens();
            int at = -1;
            for (int i = 1; i < t.size(); i++) {
                if (t.get(i) >= 32 && t.get(i) < 127 && t.get(i) != '"' && t.get(i) != '\\') {
                    at = i;
                    break;
                }
            }
            if (at < 0) {
                continue;
            }
            JsonObject o = JsonParserHolder.parse(gen("stop test", 24, seed, 1.0));
            JsonArray stop = new JsonArray();
            stop.add("\u0001\u0002"); // never produced here: the other stop must win
            stop.add(String.valueOf((char) (int) t.get(at)));
            o.add("stop", stop);
            Http.Stream s = http.generate(o.toString());
            assertEquals("stop", s.last().data().get("finish_reason").getAsString());
            assertEquals(t.subList(0, at), s.tokens(), "seed " + seed);
            assertEquals(at, s.last().data().get("completion_tokens").getAsInt());
            return;
        }
        throw new AssertionError("no output of 200 seeds held a printable ASCII byte");
    }

    /** Gson's parser, for editing a request body. */
    private static final class JsonParserHolder {
        static JsonObject parse(String s) {
            return com.google.gson.JsonParser.parseString(s).getAsJsonObject();
        }
    }

    private static int indexOf(List<Integer> t, int a, int b) {
        for (int i = 0; i + 1 < t.size(); i++) {
            if (t.get(i) == a && t.get(i + 1) == b) {
                return i;
            }
        }
        return -1;
    }

    @Test
    void badRequestsGetTheRight4xxAndTheServerGoesOn() throws Exception {
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"a\","), 400, "malformed JSON");
        assertServes();
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"a\"} trailing"), 400, "malformed JSON");
        assertError(http.postJson("/v1/generate", "{'prompt': 'a'}"), 400, "malformed JSON");
        assertError(http.postJson("/v1/generate", "[\"prompt\"]"), 400, "JSON object");
        assertError(http.postJson("/v1/generate", ""), 400, "malformed JSON");
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"a\", \"temprature\": 1}"), 400, "unknown field \"temprature\"");
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"a\", \"prompt\": \"b\"}"), 400, "twice");
        assertError(http.postJson("/v1/generate", "{\"prompt\": 5}"), 400, "\"prompt\" must be a string");
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"a\", \"max_new_tokens\": \"10\"}"), 400, "must be a number");
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"a\", \"max_new_tokens\": 2.5}"), 400, "32-bit integer");
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"a\", \"max_new_tokens\": 65}"), 400, "[1, 64]");
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"a\", \"temperature\": -1}"), 400, "temperature");
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"a\", \"top_p\": 1.5}"), 400, "top_p");
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"a\", \"top_k\": -3}"), 400, "top_k");
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"a\", \"seed\": 1e40}"), 400, "64-bit integer");
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"a\", \"stop\": {\"x\": 1}}"), 400, "array of strings");
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"a\", \"stop\": [\"\"]}"), 400, "stop");
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"\"}"), 400, "empty");
        assertError(http.postJson("/v1/generate", "{}"), 400, "required");
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"" + "x".repeat(257) + "\"}"), 400, "limit is 256");
        assertError(http.postJson("/v1/score", "{\"text\": \"abc\", \"extra\": true}"), 400, "unknown field");
        assertError(http.postJson("/v1/score", "{\"text\": [\"abc\"]}"), 400, "must be a string");
        // an escaped lone surrogate has no UTF-8: refused by name, not silently turned into '?'
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"ab\\ud800c\"}"), 400, "\"prompt\": the text has a lone surrogate U+D800 at character 2");
        assertError(http.postJson("/v1/generate", "{\"prompt\": \"a\", \"stop\": [\"\\udc00\"]}"), 400, "\"stop\": the text has a lone surrogate U+DC00");
        assertError(http.postJson("/v1/score", "{\"text\": \"abc\\ud83d\"}"), 400, "\"text\": the text has a lone surrogate U+D83D");
        assertEquals(200, http.postJson("/v1/score", "{\"text\": \"abc\\ud83d\\ude00\"}").statusCode(), "a surrogate pair is fine");
        assertServes();
        // not UTF-8, not JSON's content type, not the method, not a path
        assertError(http.send(HttpRequest.newBuilder(server.uri().resolve("/v1/generate")).header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofByteArray(new byte[] {'{', '"', (byte) 0xff, '"', ':', '1', '}'})).build()), 400, "UTF-8");
        assertError(http.send(HttpRequest.newBuilder(server.uri().resolve("/v1/generate")).header("Content-Type", "text/plain")
                .POST(HttpRequest.BodyPublishers.ofString("{\"prompt\": \"a\"}")).build()), 415, "application/json");
        assertError(http.get("/v1/generate"), 405, "POST");
        assertError(http.postJson("/health", "{}"), 405, "GET");
        assertError(http.get("/v2/nothing"), 404, "no endpoint");
        assertError(http.postJson("/v1/generate/extra", "{\"prompt\": \"a\"}"), 404, "no endpoint");
        assertServes();
    }

    @Test
    void oversizedBodiesGet413() throws Exception {
        String big = "{\"prompt\": \"" + "a".repeat(5000) + "\"}";
        assertError(http.postJson("/v1/generate", big), 413, "limit");
        assertServes();
        // no Content-Length (chunked): the limit holds while reading
        HttpRequest chunked = HttpRequest.newBuilder(server.uri().resolve("/v1/score")).header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofInputStream(() -> new java.io.ByteArrayInputStream(big.getBytes(StandardCharsets.UTF_8))))
                .build();
        assertError(http.send(chunked), 413, "limit");
        assertServes();
        // a body far beyond the limit, declared up front, is refused without being read
        String huge = "{\"prompt\": \"" + "a".repeat(2_000_000) + "\"}";
        try {
            HttpResponse<String> r = http.postJson("/v1/generate", huge);
            assertError(r, 413, "limit");
        } catch (java.io.IOException e) {
            // the server closed the connection while the client was still sending: also a refusal
            System.out.println("ServerTest: a 2 MB body was cut off by the server's close: " + e);
        }
        assertServes();
    }

    @Test
    void scoreGivesPerTokenLogprobsAndLayerRouting() throws Exception {
        String text = "The router picks tokens.";
        HttpResponse<String> r = http.postJson("/v1/score", "{\"text\": \"" + text + "\"}");
        assertEquals(200, r.statusCode(), r.body());
        JsonObject o = Http.json(r);
        assertEquals(text.length(), o.get("num_tokens").getAsInt());
        assertEquals(text.length() - 1, o.getAsJsonArray("logprobs").size());
        double sum = 0;
        for (var e : o.getAsJsonArray("logprobs")) {
            assertTrue(e.getAsDouble() < 0);
            sum += e.getAsDouble();
        }
        assertEquals(sum, o.get("total_logprob").getAsDouble(), 1e-3);
        JsonObject full = o.getAsJsonObject("full_forward");
        assertEquals(o.get("mean_nll").getAsDouble(), full.get("cross_entropy").getAsDouble(), 1e-4);
        JsonArray layers = full.getAsJsonArray("layers");
        assertEquals(2, layers.size());
        for (var l : layers) {
            double f = l.getAsJsonObject().get("routed_fraction").getAsDouble();
            assertTrue(f > 0 && f < 1, "routed fraction " + f);
            JsonArray sel = l.getAsJsonObject().getAsJsonArray("selected_positions");
            assertEquals(f, (double) sel.size() / text.length(), 1e-6);
        }
    }

    @Test
    void healthAndMetrics() throws Exception {
        assertServes();
        HttpResponse<String> h = http.get("/health");
        assertEquals(200, h.statusCode());
        JsonObject o = Http.json(h);
        assertEquals("ok", o.get("status").getAsString());
        assertEquals("tiny test model", o.getAsJsonObject("model").get("name").getAsString());
        assertEquals(64, o.getAsJsonObject("limits").get("max_new_tokens").getAsInt());
        HttpResponse<String> m = http.get("/metrics");
        assertEquals(200, m.statusCode());
        assertTrue(m.headers().firstValue("Content-Type").orElse("").startsWith("text/plain; version=0.0.4"));
        String text = m.body();
        for (String want : List.of("hspmn_http_requests_total{path=\"/v1/generate\",code=\"200\"}",
                "hspmn_http_request_duration_seconds_bucket{path=\"/v1/generate\",le=\"+Inf\"}",
                "hspmn_time_to_first_token_seconds_count", "hspmn_generated_tokens_total", "hspmn_engine_decode_steps_total",
                "# TYPE hspmn_http_request_duration_seconds histogram")) {
            assertTrue(text.contains(want), "metrics lack " + want + ":\n" + text);
        }
        // every sample line is "name{labels} value" or "name value"
        for (String line : text.split("\n")) {
            if (!line.startsWith("#")) {
                assertTrue(line.matches("[a-z_]+(\\{[^}]*\\})? -?[0-9.eE+-]+"), "bad sample line: " + line);
            }
        }
    }

    @Test
    void rawGarbageOnTheSocketDoesNotHurt() throws Exception {
        try (Socket s = new Socket(server.uri().getHost(), server.port())) {
            s.getOutputStream().write("NOT HTTP AT ALL\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
            s.getOutputStream().flush();
            s.setSoTimeout(5000);
            InputStream in = s.getInputStream();
            in.readNBytes(64); // whatever the JDK server answers (or a close)
        } catch (java.io.IOException ignored) {
            // a reset is a fine answer too
        }
        assertServes();
    }
}
