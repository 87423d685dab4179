package io.hspmn.serve;

import com.google.gson.JsonObject;
import io.hspmn.generate.Engine;
import io.hspmn.generate.TinyModels;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A bounded load test on loopback: 200 streamed generations, 8 at a time, against the tiny CPU model.
 * Prints latency percentiles; every request must succeed.
 */
@Timeout(300)
class LoadTest {
    static final int REQUESTS = 200;
    static final int CONCURRENCY = 8;
    static final int NEW_TOKENS = 16;

    private static double pct(double[] sorted, double p) {
        int i = (int) Math.ceil(p / 100 * sorted.length) - 1;
        return sorted[Math.max(0, Math.min(sorted.length - 1, i))];
    }

    @Test
    void twoHundredStreamsEightAtATime() throws Exception {
        ServerOptions opts = ServerOptions.randomDefaults().withLimits(4096, 128, 64, CONCURRENCY, CONCURRENCY);
        try (Engine engine = Engine.start(() -> TinyModels.cached(51, CONCURRENCY, opts.maxContext()), new Engine.Options(CONCURRENCY, 0));
             Server server = Server.start(opts, engine, new JsonObject())) {
            Http http = new Http(server.uri());
            http.generate("{\"prompt\": \"warm up\", \"max_new_tokens\": 4}"); // JIT and connection warm-up
            ExecutorService pool = Executors.newFixedThreadPool(CONCURRENCY);
            List<Future<double[]>> fs = new ArrayList<>();
            long t0 = System.nanoTime();
            for (int i = 0; i < REQUESTS; i++) {
                String body = "{\"prompt\": \"load test request " + i + "\", \"max_new_tokens\": " + NEW_TOKENS
                        + ", \"temperature\": 0.9, \"top_k\": 50, \"seed\": " + i + "}";
                fs.add(pool.submit(() -> {
                    long s = System.nanoTime();
                    Http.Stream st = http.generate(body);
                    double total = (System.nanoTime() - s) / 1e6;
                    if (st.status() != 200 || !st.last().name().equals("done")) {
                        return new double[] {-1, st.status(), 0};
                    }
                    JsonObject done = st.last().data();
                    return new double[] {total, done.get("time_to_first_token_ms").getAsDouble(), st.tokens().size()};
                }));
            }
            double[] latency = new double[REQUESTS];
            double[] ttft = new double[REQUESTS];
            long tokens = 0;
            int ok = 0;
            for (int i = 0; i < REQUESTS; i++) {
                double[] r = fs.get(i).get(240, TimeUnit.SECONDS);
                assertTrue(r[0] >= 0, "request " + i + " failed with status " + (int) r[1]);
                latency[i] = r[0];
                ttft[i] = r[1];
                tokens += (long) r[2];
                ok++;
            }
            double wall = (System.nanoTime() - t0) / 1e9;
            pool.shutdown();
            Arrays.sort(latency);
            Arrays.sort(ttft);
            Engine.Stats st = engine.stats();
            System.out.printf(Locale.ROOT, "LoadTest: %d/%d streams ok, %d concurrent, %d new tokens each, %.2f s wall, "
                            + "%.0f tok/s, mean decode batch %.2f%n", ok, REQUESTS, CONCURRENCY, NEW_TOKENS, wall, tokens / wall,
                    st.meanBatch());
            System.out.printf(Locale.ROOT, "LoadTest: request latency ms p50 %.1f  p95 %.1f  p99 %.1f  max %.1f%n",
                    pct(latency, 50), pct(latency, 95), pct(latency, 99), latency[REQUESTS - 1]);
            System.out.printf(Locale.ROOT, "LoadTest: time to first token ms p50 %.1f  p95 %.1f  p99 %.1f%n",
                    pct(ttft, 50), pct(ttft, 95), pct(ttft, 99));
            assertEquals(REQUESTS, ok);
            assertEquals((long) REQUESTS * NEW_TOKENS, tokens);
            // The handler counts a request after its response body is closed, so the client can have read the
            // last stream's end a moment before its count lands: wait for it (bounded), then require it.
            String counted = "hspmn_http_requests_total{path=\"/v1/generate\",code=\"200\"} " + (REQUESTS + 1);
            String metrics = http.get("/metrics").body();
            for (long end = System.nanoTime() + 10_000_000_000L; !metrics.contains(counted) && System.nanoTime() < end; ) {
                Thread.sleep(20);
                metrics = http.get("/metrics").body();
            }
            assertTrue(metrics.contains(counted), metrics);
            assertTrue(st.meanBatch() > 1, "the load was never batched: mean batch " + st.meanBatch());
        }
    }
}
