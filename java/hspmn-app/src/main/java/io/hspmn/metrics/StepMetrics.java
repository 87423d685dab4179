package io.hspmn.metrics;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonNull;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;

import java.util.Arrays;
import java.util.Objects;

/**
 * What one optimiser step reports. Field names in JSON are snake_case: step, loss, ce, aux,
 * bits_per_byte, routed_fraction (one value per layer), lr, grad_norm, tok_s, memory_bytes, and
 * val_loss / val_bpb / val_routed_fraction on the steps that ran validation (absent otherwise).
 * {@code ce} is written for readers' convenience and derived from bits_per_byte (ce = bpb * ln 2).
 *
 * <p>JSON has no NaN or infinity, and a diverging run produces them: a non-finite number is written
 * as {@code null} (and read back as NaN), so every line stays valid JSON for any reader.
 *
 * @param loss          mean next-byte cross-entropy plus the blocks' aux losses, in nats
 * @param aux           the sum of the blocks' aux losses
 * @param bitsPerByte   the cross-entropy alone in bits: loss without aux, divided by ln 2
 * @param memoryBytes   bytes the library holds (or the process's peak; the trainer says which)
 * @param valLoss       validation cross-entropy in nats, or null when this step did not validate
 * @param valBpb        validation bits per byte, or null
 * @param valRoutedFraction per layer, the fraction of tokens routed in evaluation mode (no noise) during
 *                      validation, or null
 */
public record StepMetrics(long step, double loss, double aux, double bitsPerByte, double[] routedFraction,
                          double lr, double gradNorm, double tokS, long memoryBytes, Double valLoss, Double valBpb,
                          double[] valRoutedFraction) {

    public StepMetrics {
        routedFraction = routedFraction == null ? new double[0] : routedFraction.clone();
        valRoutedFraction = valRoutedFraction == null ? null : valRoutedFraction.clone();
    }

    /** Without validation routing. */
    public StepMetrics(long step, double loss, double aux, double bitsPerByte, double[] routedFraction,
                       double lr, double gradNorm, double tokS, long memoryBytes, Double valLoss, Double valBpb) {
        this(step, loss, aux, bitsPerByte, routedFraction, lr, gradNorm, tokS, memoryBytes, valLoss, valBpb, null);
    }

    /** The same step with validation results attached. */
    public StepMetrics withValidation(double valLoss, double valBpb) {
        return new StepMetrics(step, loss, aux, bitsPerByte, routedFraction, lr, gradNorm, tokS, memoryBytes, valLoss, valBpb,
                valRoutedFraction);
    }

    /** The same step with validation results and the evaluation-mode routed fraction per layer attached. */
    public StepMetrics withValidation(double valLoss, double valBpb, double[] valRoutedFraction) {
        return new StepMetrics(step, loss, aux, bitsPerByte, routedFraction, lr, gradNorm, tokS, memoryBytes, valLoss, valBpb,
                valRoutedFraction);
    }

    @Override
    public double[] routedFraction() {
        return routedFraction.clone();
    }

    /** Null when this step did not validate (or recorded no routing). */
    @Override
    public double[] valRoutedFraction() {
        return valRoutedFraction == null ? null : valRoutedFraction.clone();
    }

    /** Mean cross-entropy in nats, from bits per byte. */
    public double ce() {
        return bitsPerByte * Math.log(2);
    }

    public boolean hasValidation() {
        return valLoss != null || valBpb != null;
    }

    /** One line of JSON, without the newline. */
    public String toJson() {
        JsonObject o = new JsonObject();
        o.addProperty("step", step);
        o.add("loss", number(loss));
        o.add("ce", number(ce()));
        o.add("aux", number(aux));
        o.add("bits_per_byte", number(bitsPerByte));
        o.add("routed_fraction", array(routedFraction));
        o.add("lr", number(lr));
        o.add("grad_norm", number(gradNorm));
        o.add("tok_s", number(tokS));
        o.addProperty("memory_bytes", memoryBytes);
        if (valLoss != null) {
            o.add("val_loss", number(valLoss));
        }
        if (valBpb != null) {
            o.add("val_bpb", number(valBpb));
        }
        if (valRoutedFraction != null) {
            o.add("val_routed_fraction", array(valRoutedFraction));
        }
        return o.toString();
    }

    private static JsonArray array(double[] values) {
        JsonArray r = new JsonArray(values.length);
        for (double f : values) {
            r.add(number(f));
        }
        return r;
    }

    private static JsonElement number(double v) {
        return Double.isFinite(v) ? new com.google.gson.JsonPrimitive(v) : JsonNull.INSTANCE;
    }

    /**
     * Parses one line written by {@link #toJson()}. A missing or null number reads as NaN (a missing
     * step is an error: a line without one cannot be plotted); unknown fields are ignored, so
     * later versions may add some.
     *
     * @throws IllegalArgumentException if the line is not a JSON object with a numeric step
     */
    public static StepMetrics fromJson(String line) {
        Objects.requireNonNull(line, "line");
        JsonObject o;
        try {
            JsonElement e = JsonParser.parseString(line);
            if (!e.isJsonObject()) {
                throw new IllegalArgumentException("not a JSON object: " + abbreviate(line));
            }
            o = e.getAsJsonObject();
            JsonElement step = o.get("step");
            if (step == null || !step.isJsonPrimitive() || !step.getAsJsonPrimitive().isNumber()) {
                throw new IllegalArgumentException("no numeric \"step\" in " + abbreviate(line));
            }
            double[] routed = doubles(o.get("routed_fraction"));
            if (routed == null) {
                routed = new double[0];
            }
            double[] valRouted = doubles(o.get("val_routed_fraction"));
            Double valLoss = o.has("val_loss") ? asDouble(o.get("val_loss")) : null;
            Double valBpb = o.has("val_bpb") ? asDouble(o.get("val_bpb")) : null;
            JsonElement mem = o.get("memory_bytes");
            long memory = mem != null && mem.isJsonPrimitive() && mem.getAsJsonPrimitive().isNumber() ? mem.getAsLong() : 0;
            return new StepMetrics(step.getAsLong(), asDouble(o.get("loss")), asDouble(o.get("aux")), asDouble(o.get("bits_per_byte")),
                    routed, asDouble(o.get("lr")), asDouble(o.get("grad_norm")), asDouble(o.get("tok_s")), memory, valLoss, valBpb,
                    valRouted);
        } catch (JsonParseException | IllegalStateException | NumberFormatException | UnsupportedOperationException e) {
            throw new IllegalArgumentException("not a metrics line (" + e.getMessage() + "): " + abbreviate(line), e);
        }
    }

    private static double[] doubles(JsonElement e) {
        if (e == null || !e.isJsonArray()) {
            return null;
        }
        JsonArray a = e.getAsJsonArray();
        double[] v = new double[a.size()];
        for (int i = 0; i < v.length; i++) {
            v[i] = asDouble(a.get(i));
        }
        return v;
    }

    private static double asDouble(JsonElement e) {
        if (e == null || !e.isJsonPrimitive() || !e.getAsJsonPrimitive().isNumber()) {
            return Double.NaN;
        }
        return e.getAsDouble();
    }

    private static String abbreviate(String s) {
        return s.length() <= 80 ? s : s.substring(0, 77) + "...";
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof StepMetrics m && step == m.step && Double.compare(loss, m.loss) == 0 && Double.compare(aux, m.aux) == 0
                && Double.compare(bitsPerByte, m.bitsPerByte) == 0 && Arrays.equals(routedFraction, m.routedFraction)
                && Double.compare(lr, m.lr) == 0 && Double.compare(gradNorm, m.gradNorm) == 0 && Double.compare(tokS, m.tokS) == 0
                && memoryBytes == m.memoryBytes && Objects.equals(valLoss, m.valLoss) && Objects.equals(valBpb, m.valBpb)
                && Arrays.equals(valRoutedFraction, m.valRoutedFraction);
    }

    @Override
    public int hashCode() {
        return Objects.hash(step, loss, bitsPerByte, Arrays.hashCode(routedFraction), valLoss, valBpb);
    }

    @Override
    public String toString() {
        return "StepMetrics" + toJson();
    }
}
