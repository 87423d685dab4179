package io.hspmn.serve;

import io.hspmn.generate.Engine;
import io.hspmn.generate.FakeEngine;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.io.InputStream;
import java.net.http.HttpResponse;
import java.util.List;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Concurrency limits and client disconnects, against a model-free engine whose steps a test can hold. */
@Timeout(120)
class ServerLimitsTest {
    @Test
    void requestsBeyondTheLimitGet429AndTheServerRecovers() throws Exception {
        Semaphore gate = new Semaphore(0);
        ServerOptions opts = ServerOptions.randomDefaults().withLimits(4096, 64, 64, 1, 1);
        try (Engine engine = Engine.start(() -> {
            FakeEngine f = new FakeEngine(256, 1000, 1);
            f.gate = gate;
            return f;
        }, new Engine.Options(1, 0)); Server server = Server.start(opts, engine, Http.fakeModel())) {
            Http http = new Http(server.uri());
            gate.release(1); // the first request's prefill; its steps then wait
            HttpResponse<InputStream> first = http.client.send(http.post("/v1/generate", "{\"prompt\": \"hold\", \"max_new_tokens\": 5}").build(),
                    HttpResponse.BodyHandlers.ofInputStream());
            try (InputStream in = first.body()) {
                assertEquals(200, first.statusCode());
                List<Http.Event> head = Http.readEvents(in, 1);
                assertEquals("token", head.getFirst().name());
                HttpResponse<String> second = http.postJson("/v1/generate", "{\"prompt\": \"b\"}");
                assertEquals(429, second.statusCode(), second.body());
                assertEquals("1", second.headers().firstValue("Retry-After").orElse(""));
                assertEquals(429, http.postJson("/v1/score", "{\"text\": \"b\"}").statusCode());
                gate.release(1_000_000);
                List<Http.Event> rest = Http.readEvents(in, 100);
                assertEquals("done", rest.getLast().name());
                assertEquals(5, rest.getLast().data().get("completion_tokens").getAsInt());
            } finally {
                gate.release(1_000_000);
            }
            Http.Stream again = http.generate("{\"prompt\": \"b\", \"max_new_tokens\": 3}");
            assertEquals(200, again.status());
            String metrics = http.get("/metrics").body();
            assertTrue(metrics.contains("hspmn_rejected_requests_total 2"), metrics);
            assertTrue(metrics.contains("hspmn_http_requests_total{path=\"/v1/generate\",code=\"429\"} 1"), metrics);
        }
    }

    @Test
    void aClientThatLeavesCancelsItsGeneration() throws Exception {
        ServerOptions opts = ServerOptions.randomDefaults().withLimits(4096, 64, 1_000_000, 4, 4);
        FakeEngine[] made = new FakeEngine[1];
        try (Engine engine = Engine.start(() -> {
            made[0] = new FakeEngine(256, 2_000_000, 4);
            return made[0];
        }, new Engine.Options(4, 0)); Server server = Server.start(opts, engine, Http.fakeModel())) {
            Http http = new Http(server.uri());
            HttpResponse<InputStream> r = http.client.send(http.post("/v1/generate",
                    "{\"prompt\": \"long\", \"max_new_tokens\": 1000000}").build(), HttpResponse.BodyHandlers.ofInputStream());
            InputStream in = r.body();
            assertEquals(3, Http.readEvents(in, 3).size());
            in.close(); // hang up mid-stream
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            String metrics = "";
            while (System.nanoTime() < deadline) {
                metrics = http.get("/metrics").body();
                if (metrics.contains("hspmn_client_disconnects_total 1") && engine.stats().active() == 0) {
                    break;
                }
                Thread.sleep(20);
            }
            assertTrue(metrics.contains("hspmn_client_disconnects_total 1"), metrics);
            assertTrue(metrics.contains("hspmn_generations_total{reason=\"cancelled\"} 1"), metrics);
            assertEquals(0, engine.stats().active());
            assertTrue(engine.stats().steps() < 1_000_000, "the generation ran to its end instead of stopping");
            assertEquals(200, http.generate("{\"prompt\": \"next\", \"max_new_tokens\": 2}").status());
        }
    }
}
