package io.hspmn.serve;

import com.google.gson.JsonObject;
import io.hspmn.generate.ByteTokenizer;
import io.hspmn.generate.Engine;

import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.Semaphore;

/**
 * What the handlers share: the engine, the limits, the metrics, the model's description, and the timer that
 * cuts off request bodies that take too long (one daemon thread; {@link #close} stops it).
 */
final class Service implements AutoCloseable {
    private final Engine engine;
    private final ServerOptions options;
    private final Metrics metrics = new Metrics();
    private final Semaphore permits;
    private final ByteTokenizer tokenizer;
    private final JsonObject model;
    private final ScheduledExecutorService timer = Executors.newSingleThreadScheduledExecutor(r -> {
        Thread t = new Thread(r, "hspmn-serve-body-timer");
        t.setDaemon(true);
        return t;
    });

    Service(Engine engine, ServerOptions options, JsonObject model) {
        this.engine = engine;
        this.options = options;
        this.permits = new Semaphore(options.maxConcurrent());
        this.tokenizer = new ByteTokenizer(engine.vocabSize());
        this.model = model.deepCopy();
    }

    Engine engine() {
        return engine;
    }

    ServerOptions options() {
        return options;
    }

    Metrics metrics() {
        return metrics;
    }

    Semaphore permits() {
        return permits;
    }

    ByteTokenizer tokenizer() {
        return tokenizer;
    }

    JsonObject model() {
        return model.deepCopy();
    }

    int inFlight() {
        return options.maxConcurrent() - permits.availablePermits();
    }

    ScheduledExecutorService timer() {
        return timer;
    }

    @Override
    public void close() {
        timer.shutdownNow();
    }
}
