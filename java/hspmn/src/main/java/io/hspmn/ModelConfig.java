package io.hspmn;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import io.hspmn.checkpoint.LanguageModelLayout;
import io.hspmn.ffi.hspmn_model_params;

import java.lang.foreign.MemorySegment;
import java.math.BigDecimal;
import java.util.Map;
import java.util.Objects;

/**
 * The configuration of a language model ({@code hspmn_model_params}, MODEL.md "The language model"):
 * embedding [V, D] -> {@code numLayers} blocks of config {@code block} -> RMSNorm -> tied head.
 *
 * <p>JSON is the checkpoint config of the reference ({@code hspmn_lm.LMConfig}):
 * {@code {"vocab_size": V, "num_layers": L, "block": {HspmnConfig JSON}}}. Other top-level keys (training
 * settings stored beside the model) are ignored when reading; an unknown block field is an error.
 *
 * @param vocabSize V, 2..65536 (byte-level: 256)
 * @param numLayers L, 1..1024
 * @param block     every layer's config; its norm_eps is the final norm's too
 */
public record ModelConfig(int vocabSize, int numLayers, HspmnConfig block) {
    public static final int BYTE_VOCAB = 256;
    public static final int MIN_VOCAB = 2;
    public static final int MAX_VOCAB = 65536;
    public static final int MAX_LAYERS = 1024;

    public ModelConfig {
        Objects.requireNonNull(block, "block");
    }

    /** A byte-level model (V = 256). */
    public static ModelConfig byteLevel(int numLayers, HspmnConfig block) {
        return new ModelConfig(BYTE_VOCAB, numLayers, block);
    }

    /**
     * Same rules as hspmn_model_params_validate; the message names the first bad field.
     *
     * @throws InvalidArgumentException naming the field
     */
    public ModelConfig validate() {
        if (vocabSize < MIN_VOCAB || vocabSize > MAX_VOCAB) {
            throw bad("vocab_size (" + vocabSize + ") must be in [" + MIN_VOCAB + ", " + MAX_VOCAB + "]");
        }
        if (numLayers < 1 || numLayers > MAX_LAYERS) {
            throw bad("num_layers (" + numLayers + ") must be in [1, " + MAX_LAYERS + "]");
        }
        block.validate();
        return this;
    }

    private static InvalidArgumentException bad(String why) {
        return new InvalidArgumentException(Status.INVALID_ARGUMENT, "invalid model config: " + why);
    }

    /** Parameter names and shapes in state_dict order (hspmn_model_param_name's order). */
    public Map<String, long[]> shapes() {
        return LanguageModelLayout.shapes(block, vocabSize, numLayers);
    }

    /** Number of parameters (elements, not bytes). */
    public long parameterCount() {
        long n = 0;
        for (long[] s : shapes().values()) {
            long e = 1;
            for (long d : s) {
                e *= d;
            }
            n += e;
        }
        return n;
    }

    /** Fills an {@code hspmn_model_params} struct. */
    void writeTo(MemorySegment p) {
        hspmn_model_params.vocab_size(p, vocabSize);
        hspmn_model_params.num_layers(p, numLayers);
        block.writeTo(hspmn_model_params.block(p));
    }

    static ModelConfig readFrom(MemorySegment p) {
        return new ModelConfig(hspmn_model_params.vocab_size(p), hspmn_model_params.num_layers(p),
                HspmnConfig.readFrom(hspmn_model_params.block(p)));
    }

    /** {@code {"vocab_size", "num_layers", "block"}} as a JSON object, to which callers may add keys. */
    public JsonObject toJsonObject() {
        JsonObject o = new JsonObject();
        o.addProperty("vocab_size", vocabSize);
        o.addProperty("num_layers", numLayers);
        o.add("block", JsonParser.parseString(block.toJson()));
        return o;
    }

    /** Compact one-line JSON. */
    public String toJson() {
        return toJsonObject().toString();
    }

    /** Parses and validates; see the class comment for the format. */
    public static ModelConfig fromJson(String json) {
        JsonElement e;
        try {
            e = JsonParser.parseString(json);
        } catch (JsonParseException ex) {
            throw bad("JSON does not parse: " + ex.getMessage());
        }
        if (!e.isJsonObject()) {
            throw bad("JSON must be an object, got " + abbreviate(String.valueOf(e)));
        }
        return fromJsonObject(e.getAsJsonObject());
    }

    public static ModelConfig fromJsonObject(JsonObject o) {
        int v = intField(o, "vocab_size");
        int n = intField(o, "num_layers");
        if (!(o.get("block") instanceof JsonObject b)) {
            throw bad("\"block\" is missing or not an object");
        }
        return new ModelConfig(v, n, HspmnConfig.fromJson(b.toString())).validate();
    }

    private static int intField(JsonObject o, String k) {
        if (!(o.get(k) instanceof JsonPrimitive p && p.isNumber())) {
            throw bad("\"" + k + "\" is missing or not a number");
        }
        try {
            return new BigDecimal(p.getAsString()).intValueExact();
        } catch (ArithmeticException | NumberFormatException ex) {
            throw bad("\"" + k + "\" must be a 32-bit integer, got " + p);
        }
    }

    private static String abbreviate(String s) {
        return s.length() <= 60 ? s : s.substring(0, 57) + "...";
    }
}
