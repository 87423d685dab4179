package io.hspmn.serve;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.gson.Strictness;
import com.google.gson.stream.JsonReader;
import io.hspmn.LanguageModel;
import io.hspmn.generate.CachedEngine;
import io.hspmn.generate.Engine;
import io.hspmn.generate.FakeEngine;
import io.hspmn.generate.TinyModels;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.StringReader;
import java.net.Socket;
import java.net.SocketException;
import java.net.SocketTimeoutException;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * What a hostile or broken client, and a broken model, do to the service (issue 11): slow bodies hold no
 * concurrency permit and are cut off; a model whose logits are not finite gives JSON errors that name the
 * problem and no Java class; the requests the JDK server refuses on its own get its HTML 400 as documented.
 */
@Timeout(120)
class ServerHardeningTest {
    /** Strict JSON (no NaN, nothing after the value), as a client's parser reads it. */
    static JsonElement strict(String text) {
        JsonReader r = new JsonReader(new StringReader(text));
        r.setStrictness(Strictness.STRICT);
        return JsonParser.parseReader(r);
    }

    /** What a raw request got: the status line's code, the headers and body as text, or -1 when the server closed without a word. */
    record Raw(int status, String text) {
    }

    /** Sends {@code bytes} on a fresh connection and reads until the server closes it (or 10 s pass). */
    static Raw raw(Server server, byte[] bytes) throws IOException {
        try (Socket s = new Socket(server.uri().getHost(), server.port())) {
            s.setSoTimeout(10_000);
            s.getOutputStream().write(bytes);
            s.getOutputStream().flush();
            s.shutdownOutput();
            ByteArrayOutputStream got = new ByteArrayOutputStream();
            try {
                s.getInputStream().transferTo(got);
            } catch (SocketException e) {
                // a reset after the answer
            }
            String text = got.toString(StandardCharsets.ISO_8859_1);
            if (!text.startsWith("HTTP/1.1 ")) {
                return new Raw(-1, text);
            }
            return new Raw(Integer.parseInt(text.substring(9, 12)), text);
        }
    }

    private static void assertServes(Http http) throws Exception {
        Http.Stream s = http.generate("{\"prompt\": \"still here?\", \"max_new_tokens\": 3, \"temperature\": 0}");
        assertEquals(200, s.status(), s.errorBody());
        assertEquals("done", s.last().name());
    }

    /**
     * The attack: 16 connections send a POST's headers and one byte of a 100-byte body, with two
     * permits. Before, each held a permit while its body dribbled in, so every other request got 429; now the
     * body is read before the permit is taken, other clients are served, and the slow ones are cut off after
     * --body-timeout-ms.
     */
    @Test
    void slowBodiesHoldNoPermitAndAreCutOff() throws Exception {
        ServerOptions opts = ServerOptions.randomDefaults().withLimits(4096, 64, 64, 2, 2).withBodyTimeout(3000);
        try (Engine engine = Engine.start(() -> new FakeEngine(256, 1000, 2), new Engine.Options(2, 0));
             Server server = Server.start(opts, engine, Http.fakeModel())) {
            Http http = new Http(server.uri());
            List<Socket> slow = new ArrayList<>();
            try {
                for (int i = 0; i < 16; i++) {
                    Socket s = new Socket(server.uri().getHost(), server.port());
                    s.setSoTimeout(15_000);
                    OutputStream os = s.getOutputStream();
                    String path = i % 2 == 0 ? "/v1/generate" : "/v1/score";
                    os.write(("POST " + path + " HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                            + "Content-Length: 100\r\n\r\n{").getBytes(StandardCharsets.US_ASCII));
                    os.flush();
                    slow.add(s);
                }
                Thread.sleep(300); // every slow request is now in its handler, waiting for its body
                long t0 = System.nanoTime();
                assertServes(http);
                HttpResponse<String> score = http.postJson("/v1/score", "{\"text\": \"abc\"}");
                assertEquals(200, score.statusCode(), score.body());
                assertTrue((System.nanoTime() - t0) / 1e9 < 3, "served only after the slow bodies were cut off");
                JsonObject health = Http.json(http.get("/health"));
                assertEquals(0, health.get("requests_in_flight").getAsInt(), health.toString());
                // the slow connections are closed once their body deadline passes
                for (Socket s : slow) {
                    InputStream in = s.getInputStream();
                    try {
                        byte[] rest = in.readAllBytes();
                        assertFalse(new String(rest, StandardCharsets.ISO_8859_1).startsWith("HTTP/1.1 2"),
                                "a request without its body was served");
                    } catch (SocketTimeoutException e) {
                        throw new AssertionError("a slow client was still connected 15 s later", e);
                    } catch (SocketException e) {
                        // reset: closed as well
                    }
                }
            } finally {
                for (Socket s : slow) {
                    s.close();
                }
            }
            // a handler records its 408 after the connection is closed: wait for the last ones
            String metrics = "";
            int timedOut = 0;
            for (long end = System.nanoTime() + 10_000_000_000L; timedOut < 16 && System.nanoTime() < end; ) {
                metrics = http.get("/metrics").body();
                timedOut = 0;
                for (String line : metrics.split("\n")) {
                    if (line.startsWith("hspmn_http_requests_total{") && line.contains("code=\"408\"")) {
                        timedOut += Integer.parseInt(line.substring(line.lastIndexOf(' ') + 1));
                    }
                }
                if (timedOut < 16) {
                    Thread.sleep(50);
                }
            }
            assertEquals(16, timedOut, metrics);
            assertTrue(metrics.contains("hspmn_rejected_requests_total 0"), metrics);
            assertServes(http);
        }
    }

    /**
     * A model whose weights are damaged (3e38 in the final norm: finite in the file, infinite in the hidden
     * state, so the tied head sums +inf and -inf) produces NaN logits. Before, /v1/score answered 200 with "logprobs":[NaN,...] (not JSON) and
     * generation errors read "java.lang.IllegalStateException: ..."; now score is a JSON 500 naming the
     * problem and generation ends with an error event, neither mentioning a Java class.
     */
    @Test
    void aModelWithNonFiniteLogitsGivesCleanErrors() throws Exception {
        ServerOptions opts = ServerOptions.randomDefaults().withLimits(4096, 64, 16, 4, 4);
        LanguageModel lm = TinyModels.create(5);
        float[] huge = new float[Math.toIntExact(lm.paramShape("norm")[0])];
        Arrays.fill(huge, 3e38f);
        lm.setParam("norm", huge);
        try (Engine engine = Engine.start(() -> new CachedEngine(lm, 4, opts.maxContext(), true), new Engine.Options(4, 0));
             Server server = Server.start(opts, engine, Http.fakeModel())) {
            Http http = new Http(server.uri());
            HttpResponse<String> score = http.postJson("/v1/score", "{\"text\": \"hello\"}");
            assertEquals(500, score.statusCode(), score.body());
            JsonObject err = strict(score.body()).getAsJsonObject().getAsJsonObject("error");
            String m = err.get("message").getAsString();
            assertTrue(m.contains("not finite") && m.contains("damaged"), m);
            assertFalse(m.contains("Exception") || m.contains("java."), m);

            Http.Stream gen = http.generate("{\"prompt\": \"hello\", \"max_new_tokens\": 4}");
            assertEquals(200, gen.status());
            Http.Event last = gen.last();
            assertEquals("error", last.name(), gen.events().toString());
            String g = last.data().get("message").getAsString();
            assertTrue(g.startsWith("generation failed: ") && g.contains("NaN"), g);
            assertFalse(g.contains("Exception") || g.contains("java."), g);
            assertEquals(0, Http.json(http.get("/health")).get("requests_in_flight").getAsInt());
        }
    }

    @Test
    void jsonOutIsStrict() {
        JsonObject o = new JsonObject();
        o.addProperty("x", Float.NaN);
        assertThrows(IllegalArgumentException.class, () -> HttpIo.strictJson(o));
        o.addProperty("x", 1.5f);
        assertEquals("{\"x\":1.5}", HttpIo.strictJson(o));
        assertEquals("boom", HttpIo.describe(new IllegalStateException("boom")));
        assertFalse(HttpIo.describe(new NullPointerException()).contains("NullPointer"));
    }

    /**
     * Requests com.sun.net.httpserver refuses before any handler runs (README, "The service"): its own HTML
     * 400 with Connection: close, not our JSON; the server goes on. (Nothing of ours can answer these: the
     * JDK's ServerImpl replies and closes the connection while it parses the request head.)
     */
    @Test
    void requestsTheJdkServerRefusesGetItsHtml400() throws Exception {
        ServerOptions opts = ServerOptions.randomDefaults().withLimits(4096, 64, 16, 4, 4);
        try (Engine engine = Engine.start(() -> new FakeEngine(256, 1000, 4), new Engine.Options(4, 0));
             Server server = Server.start(opts, engine, Http.fakeModel())) {
            String body = "{\"text\": \"x\"}";
            List<byte[]> refused = List.of(
                    ("POST /v1/score HTTP/1.1\r\nHost: h\r\nContent-Length: " + body.length()
                            + "\r\nTransfer-Encoding: chunked\r\n\r\n" + body).getBytes(StandardCharsets.US_ASCII),
                    ("POST /v1/score HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\n").getBytes(StandardCharsets.US_ASCII),
                    ("POST /v1/score HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc")
                            .getBytes(StandardCharsets.US_ASCII),
                    ("GET /health HTTP/1.1\r\nHost: h\r\nBad Header: x\r\n\r\n").getBytes(StandardCharsets.US_ASCII),
                    // a TLS ClientHello's first bytes: a client speaking https to the plain-HTTP port
                    new byte[] {0x16, 0x03, 0x01, 0x00, (byte) 0xa5, 0x01, 0x00, 0x00, (byte) 0xa1, 0x03, 0x03, '\r', '\n',
                            '\r', '\n'});
            for (byte[] req : refused) {
                Raw r = raw(server, req);
                String what = new String(req, StandardCharsets.ISO_8859_1);
                assertEquals(400, r.status(), what + " -> " + r.text());
                assertTrue(r.text().contains("Content-Type: text/html") && r.text().contains("Connection: close"), r.text());
            }
            assertServes(new Http(server.uri()));
        }
    }
}
