package io.hspmn.serve;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import com.google.gson.Strictness;
import com.google.gson.stream.JsonReader;
import com.google.gson.stream.JsonToken;
import io.hspmn.io.SafeTensorsHeader;

import java.io.IOException;
import java.io.StringReader;
import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A request body: one strict JSON object (UTF-8, no comments, no trailing data, no duplicate keys) whose
 * fields are all known. Typed getters refuse wrong types by name; every refusal is a 400 {@link HttpError}.
 */
final class JsonBody {
    private final Map<String, JsonElement> fields;

    private JsonBody(Map<String, JsonElement> fields) {
        this.fields = fields;
    }

    static JsonBody parse(byte[] body, Set<String> known) {
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(body)).toString();
        } catch (CharacterCodingException e) {
            throw HttpError.badRequest("the body is not valid UTF-8");
        }
        Map<String, JsonElement> fields = new LinkedHashMap<>();
        try {
            JsonReader r = new JsonReader(new StringReader(text));
            r.setStrictness(Strictness.STRICT);
            if (r.peek() != JsonToken.BEGIN_OBJECT) {
                throw HttpError.badRequest("the body must be a JSON object");
            }
            r.beginObject();
            while (r.hasNext()) {
                String name = r.nextName();
                JsonElement value = JsonParser.parseReader(r);
                if (!known.contains(name)) {
                    throw HttpError.badRequest("unknown field \"" + abbreviate(name) + "\"; known fields: " + String.join(", ", known));
                }
                if (fields.put(name, value) != null) {
                    throw HttpError.badRequest("field \"" + name + "\" appears twice");
                }
            }
            r.endObject();
            if (r.peek() != JsonToken.END_DOCUMENT) {
                throw HttpError.badRequest("malformed JSON: data after the object");
            }
        } catch (IOException | JsonParseException | IllegalStateException e) {  // MalformedJsonException included
            throw HttpError.badRequest("malformed JSON: " + describe(e));
        }
        return new JsonBody(fields);
    }

    /** Gson's message, less its advice to parse leniently (wrong for input we must not trust). */
    private static String describe(Exception e) {
        return SafeTensorsHeader.jsonError(e).replace("malformed JSON at", "at");
    }

    private static String abbreviate(String s) {
        return s.length() <= 120 ? s : s.substring(0, 117) + "...";
    }

    /** The field, or null when it is absent or JSON null. */
    private JsonElement get(String name) {
        JsonElement e = fields.get(name);
        return e == null || e.isJsonNull() ? null : e;
    }

    boolean has(String name) {
        return get(name) != null;
    }

    String requiredString(String name) {
        JsonElement e = get(name);
        if (e == null) {
            throw HttpError.badRequest("field \"" + name + "\" is required");
        }
        return string(name, e);
    }

    private static String string(String name, JsonElement e) {
        if (!(e instanceof JsonPrimitive p && p.isString())) {
            throw HttpError.badRequest("field \"" + name + "\" must be a string, got " + kind(e));
        }
        return p.getAsString();
    }

    int integer(String name, int dflt) {
        return (int) whole(name, dflt, 32);
    }

    long longInteger(String name, long dflt) {
        return whole(name, dflt, 64);
    }

    /** A whole number that fits in {@code bits} (32 or 64) signed bits, or dflt when the field is absent. */
    private long whole(String name, long dflt, int bits) {
        JsonElement e = get(name);
        if (e == null) {
            return dflt;
        }
        try {
            BigDecimal v = number(name, e);
            return bits == 32 ? v.intValueExact() : v.longValueExact();
        } catch (ArithmeticException ex) {
            throw HttpError.badRequest("field \"" + name + "\" must be a " + bits + "-bit integer, got " + e);
        }
    }

    float real(String name, float dflt) {
        JsonElement e = get(name);
        if (e == null) {
            return dflt;
        }
        float v = number(name, e).floatValue();
        if (!Float.isFinite(v)) {
            throw HttpError.badRequest("field \"" + name + "\" is out of range: " + e);
        }
        return v;
    }

    private static BigDecimal number(String name, JsonElement e) {
        if (!(e instanceof JsonPrimitive p && p.isNumber())) {
            throw HttpError.badRequest("field \"" + name + "\" must be a number, got " + kind(e));
        }
        try {
            return new BigDecimal(p.getAsString());
        } catch (NumberFormatException ex) {
            throw HttpError.badRequest("field \"" + name + "\" must be a number, got " + e);
        }
    }

    /** A string or an array of strings; empty when absent. */
    List<String> strings(String name) {
        JsonElement e = get(name);
        List<String> out = new ArrayList<>();
        if (e == null) {
            return out;
        }
        if (e instanceof JsonArray a) {
            for (JsonElement x : a) {
                if (!(x instanceof JsonPrimitive p && p.isString())) {
                    throw HttpError.badRequest("field \"" + name + "\" must be a string or an array of strings, got an array holding " + kind(x));
                }
                out.add(p.getAsString());
            }
            return out;
        }
        if (e instanceof JsonPrimitive p && p.isString()) {
            out.add(p.getAsString());
            return out;
        }
        throw HttpError.badRequest("field \"" + name + "\" must be a string or an array of strings, got " + kind(e));
    }

    private static String kind(JsonElement e) {
        if (e == null || e.isJsonNull()) {
            return "null";
        }
        if (e.isJsonObject()) {
            return "an object";
        }
        if (e.isJsonArray()) {
            return "an array";
        }
        JsonPrimitive p = e.getAsJsonPrimitive();
        return p.isBoolean() ? "a boolean" : p.isNumber() ? "a number" : "a string";
    }
}
