package io.hspmn.serve;

import com.google.gson.JsonArray;
import com.google.gson.JsonNull;
import com.google.gson.JsonObject;
import com.sun.net.httpserver.HttpExchange;
import io.hspmn.generate.ForwardReport;
import io.hspmn.generate.ScoreResult;

import java.io.IOException;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * POST /v1/score: {"text": string} -> the log-likelihood of each token given the ones before it, and what
 * each layer's router did over the text: the routed fraction and aux loss of a full forward, and with the
 * cached engine the positions it selected (the decoder reports them per token; the recompute engine, used
 * for top-k routing, cannot, and gives null).
 */
final class ScoreHandler extends LimitedHandler {
    static final Set<String> FIELDS = Set.of("text");
    static final long TIMEOUT_SECONDS = 300;

    ScoreHandler(Service service) {
        super(service, "/v1/score");
    }

    @Override
    int serve(HttpExchange ex, byte[] body, Runnable done) throws IOException {
        ServerOptions o = service.options();
        JsonBody j = JsonBody.parse(body, FIELDS);
        int[] ids = GenerateHandler.encode(service.tokenizer(), j.requiredString("text"), "text");
        if (ids.length == 0) {
            throw HttpError.badRequest("\"text\" is empty");
        }
        if (ids.length > o.maxPromptTokens()) {
            throw HttpError.badRequest("\"text\" has " + ids.length + " tokens (UTF-8 bytes); the limit is " + o.maxPromptTokens());
        }
        CompletableFuture<ScoreResult> f;
        try {
            f = service.engine().score(ids);
        } catch (RejectedExecutionException e) {
            service.metrics().rejected.increment();
            throw new HttpError(429, "the decoder is full; retry later (" + e.getMessage() + ")");
        } catch (IllegalArgumentException e) {
            throw HttpError.badRequest(e.getMessage());
        }
        ScoreResult r;
        try {
            r = f.get(TIMEOUT_SECONDS, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            f.cancel(false);
            Thread.currentThread().interrupt();
            throw new HttpError(503, "interrupted");
        } catch (TimeoutException e) {
            f.cancel(false);
            throw new HttpError(503, "scoring took longer than " + TIMEOUT_SECONDS + " s");
        } catch (ExecutionException e) {
            throw new HttpError(500, "scoring failed: " + HttpIo.describe(e.getCause()));
        }
        done.run();
        String bad = nonFinite(r);
        if (bad != null) {
            // JSON has no NaN; and a model that produces one is broken, which the client should hear as such.
            throw new HttpError(500, "scoring failed: the model produced a non-finite " + bad
                    + ": its weights are damaged or have diverged (hspmn verify checks a checkpoint)");
        }
        service.metrics().scoredTokens.add(ids.length);
        HttpIo.sendJson(ex, 200, toJson(r));
        return 200;
    }

    /** The first non-finite number of the result, named, or null when all are finite. */
    static String nonFinite(ScoreResult r) {
        float[] lp = r.logprobs();
        for (int i = 0; i < lp.length; i++) {
            if (!Float.isFinite(lp[i])) {
                return "log-probability (" + lp[i] + " for token " + (i + 1) + ")";
            }
        }
        ForwardReport f = r.report();
        for (int i = 0; i < f.numLayers(); i++) {
            if (!Float.isFinite(f.routedFraction()[i]) || !Float.isFinite(f.aux()[i])) {
                return "routing statistic (layer " + i + ": routed fraction " + f.routedFraction()[i] + ", aux loss "
                        + f.aux()[i] + ")";
            }
        }
        if (Double.isInfinite(f.crossEntropy())) { // NaN (one token) is left out of the JSON
            return "cross-entropy (" + f.crossEntropy() + ")";
        }
        return null;
    }

    static JsonObject toJson(ScoreResult r) {
        JsonObject o = new JsonObject();
        int[] t = r.tokens();
        o.addProperty("num_tokens", t.length);
        JsonArray tokens = new JsonArray();
        for (int v : t) {
            tokens.add(v);
        }
        o.add("tokens", tokens);
        JsonArray lp = new JsonArray();
        for (float v : r.logprobs()) {
            lp.add(v);
        }
        o.add("logprobs", lp);
        o.addProperty("logprobs_note", "logprobs[i] = ln p(tokens[i+1] | tokens[0..i]); the first token has no context");
        if (r.logprobs().length > 0) {
            o.addProperty("total_logprob", r.totalLogProb());
            o.addProperty("mean_nll", r.meanNll());
            o.addProperty("bits_per_byte", r.meanNll() / Math.log(2));
        }
        ForwardReport f = r.report();
        JsonObject full = new JsonObject();
        if (!Double.isNaN(f.crossEntropy())) {
            full.addProperty("cross_entropy", f.crossEntropy());
        }
        JsonArray layers = new JsonArray();
        float[] frac = f.routedFraction();
        float[] aux = f.aux();
        for (int i = 0; i < f.numLayers(); i++) {
            JsonObject l = new JsonObject();
            l.addProperty("layer", i);
            l.addProperty("routed_fraction", frac[i]);
            l.addProperty("aux_loss", aux[i]);
            if (f.selected() != null) {
                JsonArray sel = new JsonArray();
                for (int p : f.selected()[i]) {
                    sel.add(p);
                }
                l.add("selected_positions", sel);
            } else {
                l.add("selected_positions", JsonNull.INSTANCE);
            }
            layers.add(l);
        }
        full.add("layers", layers);
        if (f.selected() == null) {
            full.addProperty("note", "selected_positions needs the cached engine (threshold routing); routed_fraction "
                    + "is the share of the text's tokens each layer sent through attention");
        }
        o.add("full_forward", full);
        o.addProperty("ms", r.nanos() / 1e6);
        return o;
    }
}
