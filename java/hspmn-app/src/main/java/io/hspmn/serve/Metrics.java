package io.hspmn.serve;

import io.hspmn.generate.Engine;

import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.DoubleAdder;
import java.util.concurrent.atomic.LongAdder;
import java.util.function.IntSupplier;

/** The service's counters and histograms, written in the Prometheus text format (version 0.0.4). */
final class Metrics {
    /** Latency buckets, seconds. */
    static final double[] BUCKETS = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};

    static final class Histogram {
        private final LongAdder[] counts = new LongAdder[BUCKETS.length];
        private final LongAdder count = new LongAdder();
        private final DoubleAdder sum = new DoubleAdder();

        Histogram() {
            for (int i = 0; i < counts.length; i++) {
                counts[i] = new LongAdder();
            }
        }

        void observe(double seconds) {
            for (int i = 0; i < BUCKETS.length; i++) {
                if (seconds <= BUCKETS[i]) {
                    counts[i].increment();
                    break;
                }
            }
            count.increment();
            sum.add(seconds);
        }

        void write(StringBuilder sb, String name, String labels) {
            long cumulative = 0;
            String sep = labels.isEmpty() ? "" : labels + ",";
            for (int i = 0; i < BUCKETS.length; i++) {
                cumulative += counts[i].sum();
                sb.append(name).append("_bucket{").append(sep).append("le=\"").append(fmt(BUCKETS[i])).append("\"} ")
                        .append(cumulative).append('\n');
            }
            sb.append(name).append("_bucket{").append(sep).append("le=\"+Inf\"} ").append(count.sum()).append('\n');
            String l = labels.isEmpty() ? "" : "{" + labels + "}";
            sb.append(name).append("_sum").append(l).append(' ').append(fmt(sum.sum())).append('\n');
            sb.append(name).append("_count").append(l).append(' ').append(count.sum()).append('\n');
        }
    }

    private final Map<String, LongAdder> requests = new ConcurrentHashMap<>(); // "path|code"
    private final Map<String, Histogram> latency = new ConcurrentHashMap<>();  // path
    private final Histogram timeToFirstToken = new Histogram();
    final LongAdder promptTokens = new LongAdder();
    final LongAdder generatedTokens = new LongAdder();
    final LongAdder scoredTokens = new LongAdder();
    final LongAdder rejected = new LongAdder();
    final LongAdder clientDisconnects = new LongAdder();
    private final Map<String, LongAdder> finishReasons = new ConcurrentHashMap<>();

    void request(String path, int code, double seconds) {
        requests.computeIfAbsent(path + "|" + code, k -> new LongAdder()).increment();
        latency.computeIfAbsent(path, k -> new Histogram()).observe(seconds);
    }

    void firstToken(double seconds) {
        timeToFirstToken.observe(seconds);
    }

    void finished(String reason) {
        finishReasons.computeIfAbsent(reason, k -> new LongAdder()).increment();
    }

    String render(Engine engine, IntSupplier inFlight) {
        StringBuilder sb = new StringBuilder(4096);
        help(sb, "hspmn_http_requests_total", "counter", "HTTP requests by path and status code");
        for (Map.Entry<String, LongAdder> e : new TreeMap<>(requests).entrySet()) {
            String[] k = e.getKey().split("\\|", 2);
            sb.append("hspmn_http_requests_total{path=\"").append(k[0]).append("\",code=\"").append(k[1]).append("\"} ")
                    .append(e.getValue().sum()).append('\n');
        }
        help(sb, "hspmn_http_request_duration_seconds", "histogram", "time from request to the end of the response");
        for (Map.Entry<String, Histogram> e : new TreeMap<>(latency).entrySet()) {
            e.getValue().write(sb, "hspmn_http_request_duration_seconds", "path=\"" + e.getKey() + "\"");
        }
        help(sb, "hspmn_time_to_first_token_seconds", "histogram", "time from a generate request to its first token");
        timeToFirstToken.write(sb, "hspmn_time_to_first_token_seconds", "");
        counter(sb, "hspmn_prompt_tokens_total", "prompt tokens of generate requests", promptTokens.sum());
        counter(sb, "hspmn_generated_tokens_total", "tokens generated and sent", generatedTokens.sum());
        counter(sb, "hspmn_scored_tokens_total", "tokens scored", scoredTokens.sum());
        counter(sb, "hspmn_rejected_requests_total", "requests refused with 429 (service full)", rejected.sum());
        counter(sb, "hspmn_client_disconnects_total", "streams cancelled because the client went away", clientDisconnects.sum());
        help(sb, "hspmn_generations_total", "counter", "finished generations by finish reason");
        for (Map.Entry<String, LongAdder> e : new TreeMap<>(finishReasons).entrySet()) {
            sb.append("hspmn_generations_total{reason=\"").append(e.getKey()).append("\"} ").append(e.getValue().sum()).append('\n');
        }
        Engine.Stats st = engine.stats();
        gauge(sb, "hspmn_requests_in_flight", "generate and score requests being served", inFlight.getAsInt());
        gauge(sb, "hspmn_engine_active_sequences", "sequences in the decode batch", st.active());
        gauge(sb, "hspmn_engine_queued_sequences", "sequences waiting for a place in the batch", st.queued());
        counter(sb, "hspmn_engine_decode_steps_total", "batched decode steps", st.steps());
        counter(sb, "hspmn_engine_step_sequences_total", "sequences summed over decode steps (divide by steps: mean batch)", st.stepSequences());
        counter(sb, "hspmn_engine_prefills_total", "prefills", st.prefills());
        return sb.toString();
    }

    private static void help(StringBuilder sb, String name, String type, String help) {
        sb.append("# HELP ").append(name).append(' ').append(help).append('\n');
        sb.append("# TYPE ").append(name).append(' ').append(type).append('\n');
    }

    private static void counter(StringBuilder sb, String name, String help, long v) {
        help(sb, name, "counter", help);
        sb.append(name).append(' ').append(v).append('\n');
    }

    private static void gauge(StringBuilder sb, String name, String help, long v) {
        help(sb, name, "gauge", help);
        sb.append(name).append(' ').append(v).append('\n');
    }

    private static String fmt(double v) {
        if (v == Math.rint(v) && Math.abs(v) < 1e15) {
            return Long.toString((long) v);
        }
        return String.format(Locale.ROOT, "%s", v);
    }
}
