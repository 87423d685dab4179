package io.hspmn.serve;

import com.google.gson.JsonObject;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import io.hspmn.ContextOptions;
import io.hspmn.LanguageModel;
import io.hspmn.generate.DecodeEngine;
import io.hspmn.generate.Engine;
import io.hspmn.generate.Models;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.URI;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicReference;

/**
 * The example HTTP service: com.sun.net.httpserver, one virtual thread per request, one {@link Engine}
 * (one worker thread owning the native model) shared by all. Endpoints: POST /v1/generate (server-sent
 * events), POST /v1/score, GET /health, GET /metrics. See {@link ServerOptions#USAGE}.
 */
public final class Server implements AutoCloseable {
    static {
        // Token events are small writes, each flushed: without TCP_NODELAY, Nagle's algorithm holds each one
        // until the client acknowledges the previous one, and delayed ACKs turn that into ~40 ms per token.
        // The JDK server reads this property once, when its first server is made.
        if (System.getProperty("sun.net.httpserver.nodelay") == null) {
            System.setProperty("sun.net.httpserver.nodelay", "true");
        }
        // A client that sends its request line and headers slowly is cut off after this many seconds (the
        // JDK server's default is no limit; it also forgets the connections of exchanges that ended without a
        // response only through this timer). Bodies have their own, shorter deadline (--body-timeout-ms).
        if (System.getProperty("sun.net.httpserver.maxReqTime") == null) {
            System.setProperty("sun.net.httpserver.maxReqTime", "60");
        }
    }

    private final HttpServer http;
    private final ExecutorService executor;
    private final Service service;
    private final Engine ownedEngine;

    private Server(HttpServer http, ExecutorService executor, Service service, Engine ownedEngine) {
        this.http = http;
        this.executor = executor;
        this.service = service;
        this.ownedEngine = ownedEngine;
    }

    /** Loads or makes the model the options name and serves it; the server owns the engine. */
    public static Server start(ServerOptions options) {
        AtomicReference<JsonObject> model = new AtomicReference<>();
        Engine engine = Engine.start(() -> {
            ContextOptions co = ContextOptions.defaults().withBackend(options.backend()).withNumThreads(options.threads());
            LanguageModel lm = options.checkpoint() != null ? ModelLoader.load(options.checkpoint(), co)
                    : Models.random(options.randomModel(), options.seed(), co);
            DecodeEngine de;
            try {
                de = Models.engine(lm, options.engine(), options.maxBatch(), options.maxContext(), true);
            } catch (RuntimeException e) {
                Models.closeWithContext(lm);
                throw e;
            }
            JsonObject m = lm.config().toJsonObject();
            m.addProperty("backend", lm.context().backend().name().toLowerCase(java.util.Locale.ROOT));
            m.addProperty("source", options.checkpoint() != null ? ModelLoader.resolve(options.checkpoint()).toString()
                    : "random (seed " + options.seed() + ")");
            m.addProperty("engine", Models.describe(de));
            if (de instanceof io.hspmn.generate.CachedEngine c) {
                m.addProperty("decode_graphs", c.graphs());
            }
            model.set(m);
            return de;
        }, new Engine.Options(options.maxBatch(), Math.max(options.maxConcurrent() - options.maxBatch(), 0),
                options.prefillChunk()));
        try {
            return start(options, engine, model.get(), true);
        } catch (RuntimeException e) {
            engine.close();
            throw e;
        }
    }

    /** Serves an engine someone else owns (tests, embedding); closing the server leaves the engine open. */
    public static Server start(ServerOptions options, Engine engine, JsonObject model) {
        return start(options, engine, model, false);
    }

    private static Server start(ServerOptions options, Engine engine, JsonObject model, boolean owned) {
        if (engine.maxLength() < options.maxContext()) {
            throw new IllegalArgumentException("the engine holds " + engine.maxLength() + " tokens; the limits need "
                    + options.maxContext() + " (--max-prompt-tokens + --max-new-tokens)");
        }
        HttpServer http;
        try {
            http = HttpServer.create(new InetSocketAddress(options.host(), options.port()), 64);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot listen on " + options.host() + ":" + options.port() + ": " + e.getMessage(), e);
        }
        Service service = new Service(engine, options, model);
        ExecutorService executor = Executors.newVirtualThreadPerTaskExecutor();
        http.setExecutor(executor);
        http.createContext("/v1/generate", new GenerateHandler(service));
        http.createContext("/v1/score", new ScoreHandler(service));
        http.createContext("/health", ex -> simple(ex, "/health", service, () -> health(service)));
        http.createContext("/metrics", ex -> simple(ex, "/metrics", service, null));
        http.createContext("/", ex -> simple(ex, null, service, null));
        http.start();
        return new Server(http, executor, service, owned ? engine : null);
    }

    private static JsonObject health(Service s) {
        JsonObject o = new JsonObject();
        o.addProperty("status", "ok");
        o.add("model", s.model());
        Engine.Stats st = s.engine().stats();
        JsonObject e = new JsonObject();
        e.addProperty("active", st.active());
        e.addProperty("queued", st.queued());
        e.addProperty("steps", st.steps());
        e.addProperty("mean_batch", st.meanBatch());
        o.add("engine", e);
        ServerOptions op = s.options();
        JsonObject l = new JsonObject();
        l.addProperty("max_body_bytes", op.maxBodyBytes());
        l.addProperty("max_prompt_tokens", op.maxPromptTokens());
        l.addProperty("max_new_tokens", op.maxNewTokens());
        l.addProperty("max_concurrent", op.maxConcurrent());
        l.addProperty("max_batch", op.maxBatch());
        o.add("limits", l);
        o.addProperty("requests_in_flight", s.inFlight());
        return o;
    }

    /** GET /health, GET /metrics, and 404 for everything else. */
    private static void simple(HttpExchange ex, String path, Service s, java.util.function.Supplier<JsonObject> json) {
        long t0 = System.nanoTime();
        int code = 200;
        try {
            String p = ex.getRequestURI().getPath();
            if (path == null || !p.equals(path)) {
                throw new HttpError(404, "no endpoint " + p + "; try POST /v1/generate, POST /v1/score, GET /health, GET /metrics");
            }
            HttpIo.requireMethod(ex, "GET");
            if (json != null) {
                HttpIo.sendJson(ex, 200, json.get());
            } else {
                HttpIo.sendText(ex, 200, "text/plain; version=0.0.4; charset=utf-8", s.metrics().render(s.engine(), s::inFlight));
            }
        } catch (HttpError e) {
            code = e.status();
            try {
                HttpIo.sendError(ex, e.status(), e.getMessage());
            } catch (IOException ignored) {
                // the client is gone
            }
        } catch (IOException | RuntimeException e) {
            code = 500;
        } finally {
            s.metrics().request(path == null ? "other" : path, code, (System.nanoTime() - t0) / 1e9);
            ex.close();
        }
    }

    /** What /health reports as the model (config, backend, source, engine). */
    public JsonObject model() {
        return service.model();
    }

    public int port() {
        return http.getAddress().getPort();
    }

    public URI uri() {
        return URI.create("http://" + http.getAddress().getHostString() + ":" + port());
    }

    /** Stops listening, lets requests in flight end (at most 2 s), then closes the engine if it is ours. */
    @Override
    public void close() {
        http.stop(2);
        executor.shutdownNow();
        service.close();
        if (ownedEngine != null) {
            ownedEngine.close();
        }
    }

    /** {@code hspmn serve}: see {@link io.hspmn.cli.Main} (the same command and exit codes). */
    public static void main(String[] args) {
        String[] a = new String[args.length + 1];
        a[0] = "serve";
        System.arraycopy(args, 0, a, 1, args.length);
        io.hspmn.cli.Main.main(a);
    }
}
