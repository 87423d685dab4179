package io.hspmn.eval;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import io.hspmn.Backend;

import java.util.Locale;

/**
 * What {@link HeldOutEval#evaluate} measured.
 *
 * @param splitBytes     bytes in the held-out stream
 * @param scoredBytes    bytes predicted: splitBytes - 1 (every byte but the first, once)
 * @param windows        windows scored (the last may be shorter than seqLen)
 * @param seqLen         context of the windows
 * @param batch          whole windows per forward
 * @param natsPerByte    mean next-byte cross-entropy, nats
 * @param routedFraction per layer, the share of the scored positions routed to attention (no noise)
 * @param seconds        wall time of the forwards (copies in and out included)
 * @param backend        where they ran
 */
public record HeldOutResult(long splitBytes, long scoredBytes, long windows, int seqLen, int batch, double natsPerByte,
                            double[] routedFraction, double seconds, Backend backend) {
    public HeldOutResult {
        routedFraction = routedFraction.clone();
    }

    @Override
    public double[] routedFraction() {
        return routedFraction.clone();
    }

    public double bitsPerByte() {
        return natsPerByte / Math.log(2);
    }

    /** Scored bytes per second of wall time. */
    public double tokensPerSecond() {
        return seconds > 0 ? scoredBytes / seconds : Double.NaN;
    }

    /** The fields above (snake_case) plus bits_per_byte and tokens_per_second. */
    public JsonObject toJsonObject() {
        JsonObject o = new JsonObject();
        o.addProperty("bits_per_byte", bitsPerByte());
        o.addProperty("nats_per_byte", natsPerByte);
        JsonArray r = new JsonArray();
        for (double f : routedFraction) {
            r.add(f);
        }
        o.add("routed_fraction", r);
        o.addProperty("split_bytes", splitBytes);
        o.addProperty("scored_bytes", scoredBytes);
        o.addProperty("windows", windows);
        o.addProperty("seq_len", seqLen);
        o.addProperty("batch", batch);
        o.addProperty("seconds", seconds);
        o.addProperty("tokens_per_second", tokensPerSecond());
        o.addProperty("backend", backend.name().toLowerCase(Locale.ROOT));
        return o;
    }
}
