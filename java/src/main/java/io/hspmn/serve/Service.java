package io.hspmn.serve;

import com.google.gson.JsonObject;
import io.hspmn.generate.ByteTokenizer;
import io.hspmn.generate.Engine;

import java.util.concurrent.Semaphore;

/** What the handlers share: the engine, the limits, the metrics and the model's description. */
final class Service {
    private final Engine engine;
    private final ServerOptions options;
    private final Metrics metrics = new Metrics();
    private final Semaphore permits;
    private final ByteTokenizer tokenizer;
    private final JsonObject model;

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
}
