package io.hspmn.serve;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.hspmn.args.CommandLine;
import io.hspmn.metrics.JsonFile;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * An HTTP load test of a running service: {@code streams} clients at once, each sending {@code requests}
 * streamed {@code /v1/generate} requests one after another, every one asking for exactly
 * {@code newTokens} tokens (no stop sequences). Measures, at the client, the time between consecutive
 * token events of a response (the latency a reader of the stream sees), the time to the first token, the
 * whole request, and the total token throughput over the wall time; counts errors (a status other than
 * 200, an {@code error} event, a stream that ends without {@code done}, a token count other than asked
 * for, an I/O failure). Writes the report as JSON and prints one summary line.
 *
 * <p>{@code ci/serve-load.sh} starts {@code hspmn serve} and runs this against it (on the GPU machine:
 * {@code ci/gpu-serve.sh}); {@code LoadClientTest} runs it in-process against the tiny CPU model.
 */
public final class LoadClient implements AutoCloseable {

    /**
     * @param url         the service, e.g. http://127.0.0.1:8080
     * @param streams     concurrent clients
     * @param requests    requests per client, one after another
     * @param newTokens   max_new_tokens of each request (all of them are expected)
     * @param promptBytes prompt length in bytes (tokens)
     * @param temperature sampling of every request (0: greedy)
     * @param topK        0: none
     * @param topP        1: none
     * @param warmup      requests sent (one at a time) before the measurement, not counted
     * @param timeoutS    longest a request may take
     */
    public record Options(URI url, int streams, int requests, int newTokens, int promptBytes, float temperature, int topK,
                          float topP, int warmup, int timeoutS) {
        public Options {
            if (url == null) {
                throw new IllegalArgumentException("--url is required");
            }
            for (int v : new int[] {streams, requests, newTokens, promptBytes, timeoutS}) {
                if (v < 1) {
                    throw new IllegalArgumentException("--streams, --requests, --new-tokens, --prompt-bytes and --timeout-s must be >= 1");
                }
            }
            if (warmup < 0) {
                throw new IllegalArgumentException("--warmup must be >= 0");
            }
        }

        public static Options of(URI url, int streams, int requests, int newTokens) {
            return new Options(url, streams, requests, newTokens, 32, 0.8f, 40, 0.95f, 1, 600);
        }
    }

    /** Percentiles of one measure, in ms. */
    public record Stats(long count, double mean, double p50, double p90, double p99, double max) {
        static Stats of(double[] v, int n) {
            if (n == 0) {
                return new Stats(0, Double.NaN, Double.NaN, Double.NaN, Double.NaN, Double.NaN);
            }
            double[] s = Arrays.copyOf(v, n);
            Arrays.sort(s);
            double sum = 0;
            for (double x : s) {
                sum += x;
            }
            return new Stats(n, sum / n, pct(s, 50), pct(s, 90), pct(s, 99), s[n - 1]);
        }

        /** Nearest-rank percentile of sorted values. */
        static double pct(double[] sorted, double p) {
            int i = (int) Math.ceil(p / 100 * sorted.length) - 1;
            return sorted[Math.max(0, Math.min(sorted.length - 1, i))];
        }

        JsonObject json() {
            JsonObject o = new JsonObject();
            o.addProperty("count", count);
            o.addProperty("mean", round(mean));
            o.addProperty("p50", round(p50));
            o.addProperty("p90", round(p90));
            o.addProperty("p99", round(p99));
            o.addProperty("max", round(max));
            return o;
        }
    }

    /**
     * What a run measured.
     *
     * @param interToken   ms between consecutive tokens of one response
     * @param firstToken   ms from sending a request to its first token
     * @param request      ms from sending a request to the end of its stream
     * @param errorSamples up to 10 error descriptions
     * @param server       the service's /health after the run (null if it did not answer)
     */
    public record Report(Options options, double wallSeconds, long requestsOk, long tokens, long errors,
                         List<String> errorSamples, Stats interToken, Stats firstToken, Stats request, JsonObject server) {
        public double tokensPerSecond() {
            return tokens / wallSeconds;
        }

        public JsonObject json() {
            JsonObject o = new JsonObject();
            o.addProperty("url", options.url().toString());
            o.addProperty("streams", options.streams());
            o.addProperty("requests_per_stream", options.requests());
            o.addProperty("new_tokens", options.newTokens());
            o.addProperty("prompt_bytes", options.promptBytes());
            o.addProperty("temperature", options.temperature());
            o.addProperty("top_k", options.topK());
            o.addProperty("top_p", options.topP());
            o.addProperty("wall_s", round(wallSeconds));
            o.addProperty("requests_ok", requestsOk);
            o.addProperty("tokens", tokens);
            o.addProperty("tokens_per_s", round(tokensPerSecond()));
            o.addProperty("errors", errors);
            com.google.gson.JsonArray samples = new com.google.gson.JsonArray();
            errorSamples.forEach(samples::add);
            o.add("error_samples", samples);
            o.add("inter_token_ms", interToken.json());
            o.add("first_token_ms", firstToken.json());
            o.add("request_ms", request.json());
            o.add("server_health", server);
            return o;
        }

        public String summary() {
            return String.format(Locale.ROOT, "serve load: %d streams x %d requests x %d tokens: %d tokens in %.2f s = %.0f tok/s;"
                            + " time between tokens p50 %.3f ms p99 %.3f ms; first token p50 %.1f ms p99 %.1f ms; errors %d",
                    options.streams(), options.requests(), options.newTokens(), tokens, wallSeconds, tokensPerSecond(),
                    interToken.p50(), interToken.p99(), firstToken.p50(), firstToken.p99(), errors);
        }
    }

    private static double round(double v) {
        return Double.isFinite(v) ? Math.round(v * 1000) / 1000.0 : v;
    }

    /** One client's measurements (its thread alone writes them). */
    private static final class Sink {
        double[] gaps = new double[1024];
        int nGaps;
        final List<Double> firsts = new ArrayList<>();
        final List<Double> totals = new ArrayList<>();
        long tokens;
        long ok;
        final List<String> errors = new ArrayList<>();

        void gap(double ms) {
            if (nGaps == gaps.length) {
                gaps = Arrays.copyOf(gaps, 2 * nGaps);
            }
            gaps[nGaps++] = ms;
        }
    }

    private final Options options;
    private final HttpClient client;

    public LoadClient(Options options) {
        this.options = options;
        this.client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(30))
                .executor(Executors.newVirtualThreadPerTaskExecutor()).build();
    }

    @Override
    public void close() {
        client.close();
    }

    private String body(int stream, int request) {
        StringBuilder p = new StringBuilder(options.promptBytes());
        String seed = "load test stream " + stream + " request " + request + ": ";
        while (p.length() < options.promptBytes()) {
            p.append(seed);
        }
        p.setLength(options.promptBytes());
        JsonObject o = new JsonObject();
        o.addProperty("prompt", p.toString());
        o.addProperty("max_new_tokens", options.newTokens());
        o.addProperty("temperature", options.temperature());
        o.addProperty("top_k", options.topK());
        o.addProperty("top_p", options.topP());
        o.addProperty("seed", 1000L * stream + request);
        return o.toString();
    }

    /** One streamed request; its measures go to {@code sink} (null: not measured). */
    private void request(int stream, int request, Sink sink) {
        HttpRequest r = HttpRequest.newBuilder(options.url().resolve("/v1/generate"))
                .timeout(Duration.ofSeconds(options.timeoutS())).header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body(stream, request))).build();
        String what = "stream " + stream + " request " + request + ": ";
        long t0 = System.nanoTime();
        long last = -1;
        long first = -1;
        int tokens = 0;
        boolean done = false;
        try {
            HttpResponse<InputStream> resp = client.send(r, HttpResponse.BodyHandlers.ofInputStream());
            try (InputStream in = resp.body()) {
                if (resp.statusCode() != 200) {
                    String b = new String(in.readNBytes(400), StandardCharsets.UTF_8);
                    fail(sink, what + "status " + resp.statusCode() + " " + b);
                    return;
                }
                BufferedReader br = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8));
                String event = null;
                String line;
                while ((line = br.readLine()) != null) {
                    if (line.startsWith("event: ")) {
                        event = line.substring(7);
                    } else if (line.startsWith("data: ")) {
                        if ("token".equals(event)) {
                            long now = System.nanoTime();
                            if (last >= 0 && sink != null) {
                                sink.gap((now - last) / 1e6);
                            }
                            if (first < 0) {
                                first = now;
                            }
                            last = now;
                            tokens++;
                        } else if ("done".equals(event)) {
                            JsonObject d = JsonParser.parseString(line.substring(6)).getAsJsonObject();
                            String reason = d.get("finish_reason").getAsString();
                            if (!reason.equals("length")) {
                                fail(sink, what + "finished by '" + reason + "', not by length");
                                return;
                            }
                            done = true;
                        } else if ("error".equals(event)) {
                            fail(sink, what + "error event " + line.substring(6));
                            return;
                        }
                    }
                }
            }
        } catch (IOException | RuntimeException e) {
            fail(sink, what + e);
            return;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            fail(sink, what + "interrupted");
            return;
        }
        if (!done) {
            fail(sink, what + "the stream ended without a done event after " + tokens + " tokens");
        } else if (tokens != options.newTokens()) {
            fail(sink, what + tokens + " token events, asked for " + options.newTokens());
        } else if (sink != null) {
            sink.ok++;
            sink.tokens += tokens;
            sink.firsts.add((first - t0) / 1e6);
            sink.totals.add((System.nanoTime() - t0) / 1e6);
        }
    }

    private static void fail(Sink sink, String message) {
        if (sink != null) {
            sink.errors.add(message);
        } else {
            throw new IllegalStateException("warm-up: " + message);
        }
    }

    /** Runs the load; the report says what went wrong rather than throwing (except a failed warm-up). */
    public Report run() throws InterruptedException {
        for (int i = 0; i < options.warmup(); i++) {
            request(-1, i, null);
        }
        int n = options.streams();
        Sink[] sinks = new Sink[n];
        ExecutorService pool = Executors.newFixedThreadPool(n);
        CountDownLatch go = new CountDownLatch(1);
        List<Future<?>> fs = new ArrayList<>();
        for (int s = 0; s < n; s++) {
            int stream = s;
            sinks[s] = new Sink();
            fs.add(pool.submit(() -> {
                go.await();
                for (int q = 0; q < options.requests(); q++) {
                    request(stream, q, sinks[stream]);
                }
                return null;
            }));
        }
        long t0 = System.nanoTime();
        go.countDown();
        for (Future<?> f : fs) {
            try {
                f.get();
            } catch (ExecutionException e) {
                throw new IllegalStateException("a load client crashed", e.getCause());
            }
        }
        double wall = (System.nanoTime() - t0) / 1e9;
        pool.shutdown();
        int gaps = 0;
        for (Sink s : sinks) {
            gaps += s.nGaps;
        }
        double[] all = new double[gaps];
        List<Double> firsts = new ArrayList<>();
        List<Double> totals = new ArrayList<>();
        List<String> errors = new ArrayList<>();
        long tokens = 0;
        long ok = 0;
        int at = 0;
        for (Sink s : sinks) {
            System.arraycopy(s.gaps, 0, all, at, s.nGaps);
            at += s.nGaps;
            firsts.addAll(s.firsts);
            totals.addAll(s.totals);
            errors.addAll(s.errors);
            tokens += s.tokens;
            ok += s.ok;
        }
        return new Report(options, wall, ok, tokens, errors.size(), Collections.unmodifiableList(errors.subList(0,
                Math.min(10, errors.size()))), Stats.of(all, gaps), Stats.of(unbox(firsts), firsts.size()),
                Stats.of(unbox(totals), totals.size()), health());
    }

    private static double[] unbox(List<Double> v) {
        return v.stream().mapToDouble(Double::doubleValue).toArray();
    }

    private JsonObject health() {
        try {
            HttpResponse<String> r = client.send(HttpRequest.newBuilder(options.url().resolve("/health"))
                    .timeout(Duration.ofSeconds(30)).GET().build(), HttpResponse.BodyHandlers.ofString());
            return r.statusCode() == 200 ? JsonParser.parseString(r.body()).getAsJsonObject() : null;
        } catch (IOException | RuntimeException e) {
            return null;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return null;
        }
    }

    static final String USAGE = """
            usage: LoadClient --url URL [--streams 32] [--requests 4] [--new-tokens 128] [--prompt-bytes 32]
                              [--temperature 0.8] [--top-k 40] [--top-p 0.95] [--warmup 1] [--timeout-s 600] [--json FILE]

            Load test of a running `hspmn serve`: --streams clients at once, each sending --requests streamed
            /v1/generate requests in turn, each for exactly --new-tokens tokens. Prints one summary line (tok/s,
            p50/p99 time between tokens and to the first token, errors) and writes the whole report to --json.
            Exit status: 0 no errors, 1 any error, 2 bad options.
            """;

    /** Runs a load test from the command line (see {@link #USAGE}). */
    public static void main(String[] args) throws Exception {
        System.exit(run(args, System.out, System.err));
    }

    private static final Set<String> VALUED = Set.of("url", "streams", "requests", "new-tokens", "prompt-bytes",
            "temperature", "top-k", "top-p", "warmup", "timeout-s", "json");

    static int run(String[] args, PrintStream out, PrintStream err) throws InterruptedException, IOException {
        Options o;
        Path json;
        try {
            CommandLine c = CommandLine.parse("LoadClient", args, VALUED, Set.of());
            if (c.help) {
                out.print(USAGE);
                return 0;
            }
            c.noPositional();
            Options d = Options.of(URI.create(c.required("url", "the server, e.g. http://127.0.0.1:8080")), 32, 4, 128);
            o = new Options(d.url(), c.intValue("streams", d.streams()), c.intValue("requests", d.requests()),
                    c.intValue("new-tokens", d.newTokens()), c.intValue("prompt-bytes", d.promptBytes()),
                    (float) c.doubleValue("temperature", d.temperature()), c.intValue("top-k", d.topK()),
                    (float) c.doubleValue("top-p", d.topP()), c.intValue("warmup", d.warmup()),
                    c.intValue("timeout-s", d.timeoutS()));
            json = c.path("json");
        } catch (IllegalArgumentException e) {
            err.println("error: " + e.getMessage());
            err.print(USAGE);
            return 2;
        }
        Report r;
        try (LoadClient c = new LoadClient(o)) {
            r = c.run();
        } catch (IllegalStateException e) {
            err.println("error: " + e.getMessage());
            return 1;
        }
        if (json != null) {
            JsonFile.write(json, r.json());
        }
        for (String e : r.errorSamples()) {
            err.println("error: " + e);
        }
        out.println(r.summary());
        return r.errors() == 0 ? 0 : 1;
    }
}
