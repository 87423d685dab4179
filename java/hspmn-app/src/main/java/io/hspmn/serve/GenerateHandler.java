package io.hspmn.serve;

import com.google.gson.JsonObject;
import com.sun.net.httpserver.HttpExchange;
import io.hspmn.generate.ByteTokenizer;
import io.hspmn.generate.Engine;
import io.hspmn.generate.FinishReason;
import io.hspmn.generate.GenerationRequest;
import io.hspmn.generate.GenerationResult;
import io.hspmn.generate.GenerationSession;
import io.hspmn.generate.SamplingParams;

import java.io.IOException;
import java.io.OutputStream;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.atomic.AtomicLong;

/**
 * POST /v1/generate: {"prompt": string, "max_new_tokens": int, "temperature": number, "top_k": int,
 * "top_p": number, "seed": int, "stop": string | [string]} -> server-sent events: {@code token}
 * {"index", "token", "text"} per token ("text" is what the token completes of the UTF-8 output, "" inside a
 * multi-byte character), then {@code done} with the whole text, the finish reason and timings, or
 * {@code error}.
 */
final class GenerateHandler extends LimitedHandler {
    static final Set<String> FIELDS = new LinkedHashSet<>(List.of("prompt", "max_new_tokens", "temperature", "top_k", "top_p",
            "seed", "stop"));
    static final int MAX_STOP_BYTES = 64;

    private final AtomicLong seeds = new AtomicLong(new SecureRandom().nextLong());

    GenerateHandler(Service service) {
        super(service, "/v1/generate");
    }

    @Override
    int serve(HttpExchange ex, byte[] body, Runnable done) throws IOException {
        ServerOptions o = service.options();
        ByteTokenizer tok = service.tokenizer();
        JsonBody j = JsonBody.parse(body, FIELDS);
        int[] prompt = encode(tok, j.requiredString("prompt"), "prompt");
        if (prompt.length == 0) {
            throw HttpError.badRequest("\"prompt\" is empty: the model needs at least one byte to start from");
        }
        if (prompt.length > o.maxPromptTokens()) {
            throw HttpError.badRequest("\"prompt\" has " + prompt.length + " tokens (UTF-8 bytes); the limit is " + o.maxPromptTokens());
        }
        int maxNew = j.integer("max_new_tokens", o.defaultNewTokens());
        if (maxNew < 1 || maxNew > o.maxNewTokens()) {
            throw HttpError.badRequest("\"max_new_tokens\" must be in [1, " + o.maxNewTokens() + "], got " + maxNew);
        }
        long seed = j.has("seed") ? j.longInteger("seed", 0) : mix(seeds.getAndIncrement());
        SamplingParams sampling;
        try {
            sampling = new SamplingParams(j.real("temperature", 1f), j.integer("top_k", 0), j.real("top_p", 1f), seed);
        } catch (IllegalArgumentException e) {
            throw HttpError.badRequest(e.getMessage());
        }
        List<String> stopTexts = j.strings("stop");
        if (stopTexts.size() > GenerationRequest.MAX_STOP_SEQUENCES) {
            throw HttpError.badRequest("\"stop\" has " + stopTexts.size() + " entries; at most " + GenerationRequest.MAX_STOP_SEQUENCES);
        }
        List<int[]> stops = new ArrayList<>();
        for (String s : stopTexts) {
            int[] ids = encode(tok, s, "stop");
            if (ids.length == 0 || ids.length > MAX_STOP_BYTES) {
                throw HttpError.badRequest("each \"stop\" entry must have 1 to " + MAX_STOP_BYTES + " bytes, got " + ids.length);
            }
            stops.add(ids);
        }
        GenerationRequest req = new GenerationRequest(prompt, sampling, maxNew, stops, false);
        Engine engine = service.engine();
        GenerationSession session;
        try {
            session = engine.submit(req);
        } catch (RejectedExecutionException e) {
            service.metrics().rejected.increment();
            throw new HttpError(429, "the decoder is full; retry later (" + e.getMessage() + ")");
        } catch (IllegalArgumentException e) {
            throw HttpError.badRequest(e.getMessage());
        }
        service.metrics().promptTokens.add(prompt.length);
        try (session) {
            OutputStream os = HttpIo.startEvents(ex);
            ByteTokenizer.StreamDecoder dec = new ByteTokenizer.StreamDecoder();
            int i = 0;
            try {
                for (int t : session) {
                    JsonObject e = new JsonObject();
                    e.addProperty("index", i);
                    e.addProperty("token", t);
                    e.addProperty("text", dec.accept(t));
                    HttpIo.event(os, "token", e);
                    service.metrics().generatedTokens.increment();
                    i++;
                }
            } catch (IOException e) {
                // the client went away: stop decoding for it
                session.cancel();
                service.metrics().clientDisconnects.increment();
                service.metrics().finished(FinishReason.CANCELLED.jsonName());
                throw e;
            }
            GenerationResult r = awaitUninterruptibly(session);
            done.run();
            service.metrics().finished(r.finishReason().jsonName());
            if (r.firstTokenNanos() >= 0) {
                service.metrics().firstToken(r.firstTokenNanos() / 1e9);
            }
            if (r.finishReason() == FinishReason.ERROR) {
                JsonObject e = new JsonObject();
                e.addProperty("message", "generation failed: " + HttpIo.describe(r.error()));
                e.addProperty("completion_tokens", r.generatedTokens());
                HttpIo.event(os, "error", e);
            } else {
                HttpIo.event(os, "done", done(r, seed));
            }
            os.close();
        }
        return 200;
    }

    private static JsonObject done(GenerationResult r, long seed) {
        JsonObject d = new JsonObject();
        int[] t = r.tokens();
        d.addProperty("finish_reason", r.finishReason().jsonName());
        d.addProperty("text", ByteTokenizer.decode(t, 0, t.length));
        d.addProperty("prompt_tokens", r.promptTokens());
        d.addProperty("completion_tokens", t.length);
        d.addProperty("seed", seed);
        d.addProperty("queue_ms", r.queuedNanos() / 1e6);
        d.addProperty("time_to_first_token_ms", r.firstTokenNanos() < 0 ? -1 : r.firstTokenNanos() / 1e6);
        d.addProperty("total_ms", r.totalNanos() / 1e6);
        d.addProperty("decode_tokens_per_second", r.decodeTokensPerSecond());
        return d;
    }

    private static GenerationResult awaitUninterruptibly(GenerationSession s) {
        boolean interrupted = false;
        try {
            while (true) {
                try {
                    return s.await();
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
        } finally {
            if (interrupted) {
                Thread.currentThread().interrupt();
            }
        }
    }

    static int[] encode(ByteTokenizer tok, String text, String field) {
        try {
            return tok.encode(text);
        } catch (IllegalArgumentException e) {
            throw HttpError.badRequest("\"" + field + "\": " + e.getMessage());
        }
    }

    /** Seeds for requests that give none: distinct, and not guessable from one another. */
    private static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }
}
