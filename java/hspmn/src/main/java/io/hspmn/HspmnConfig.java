package io.hspmn;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import io.hspmn.ffi.hspmn_block_params;
import io.hspmn.ffi.hspmn_h;

import java.lang.foreign.Arena;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.StringJoiner;
import java.util.TreeMap;

/**
 * The configuration of one block: a value copy of {@code hspmn_block_params}. Its fields come from the
 * generated layout, its defaults from {@code hspmn_block_default_params} and its rules from
 * {@code hspmn_block_params_validate}, so a field added to hspmn.h needs no edit here: it is read and set by
 * name ({@link #get}, {@link Builder#set}) and travels through JSON, checkpoints and the command line. The
 * typed accessors are the fields Java code itself reads.
 *
 * <p>JSON uses the C field names (snake_case); a field with constants of its own in hspmn.h
 * ({@code routing}: {@code HSPMN_ROUTING_TOPK}, ...) is spelled by name in lower case ("topk", "threshold").
 */
public final class HspmnConfig {

    /**
     * One field of {@code hspmn_block_params} ({@code reserved*} fields are left out and stay 0).
     *
     * @param names the field's constants by code ({@code HSPMN_<FIELD>_<NAME>}, NAME in lower case); empty
     *              for a plain number
     */
    public record Field(String name, ValueLayout layout, long offset, Map<Integer, String> names) {
        /** An integer field (its JSON value must be a whole number), as opposed to a float one. */
        public boolean isInteger() {
            return layout.carrier() == int.class || layout.carrier() == long.class;
        }

        Number read(MemorySegment s) {
            return switch (layout) {
                case ValueLayout.OfInt l -> s.get(l, offset);
                case ValueLayout.OfLong l -> s.get(l, offset);
                case ValueLayout.OfFloat l -> s.get(l, offset);
                case ValueLayout.OfDouble l -> s.get(l, offset);
                default -> throw new IllegalStateException("hspmn_block_params." + name + ": unsupported " + layout);
            };
        }

        void write(MemorySegment s, Number v) {
            switch (layout) {
                case ValueLayout.OfInt l -> s.set(l, offset, exact(v).intValueExact());
                case ValueLayout.OfLong l -> s.set(l, offset, exact(v).longValueExact());
                case ValueLayout.OfFloat l -> s.set(l, offset, v.floatValue());
                case ValueLayout.OfDouble l -> s.set(l, offset, v.doubleValue());
                default -> throw new IllegalStateException("hspmn_block_params." + name + ": unsupported " + layout);
            }
        }

        private BigDecimal exact(Number v) {
            try {
                return new BigDecimal(v.toString());
            } catch (NumberFormatException e) {
                throw new ArithmeticException(v + " is not a number");
            }
        }

        /** The text form: the name of a named field's value, else the number (as Integer/Float.toString). */
        public String format(Number v) {
            return names.isEmpty() ? v.toString() : names.getOrDefault(v.intValue(), v.toString());
        }

        /**
         * Parses the text form.
         *
         * @throws IllegalArgumentException with what was expected ("an integer", "a finite number", the names)
         */
        public Number parse(String text) {
            String t = text.trim();
            if (!names.isEmpty()) {
                for (Map.Entry<Integer, String> e : names.entrySet()) {
                    if (e.getValue().equals(t.toLowerCase(Locale.ROOT))) {
                        return e.getKey();
                    }
                }
                throw new IllegalArgumentException(String.join(" or ", names.values()));
            }
            try {
                if (isInteger()) {
                    return layout.carrier() == int.class ? (Number) Integer.parseInt(t) : (Number) Long.parseLong(t);
                }
                Number x = layout.carrier() == float.class ? (Number) Float.parseFloat(t) : (Number) Double.parseDouble(t);
                if (Double.isFinite(x.doubleValue())) {
                    return x;
                }
            } catch (NumberFormatException ignored) {
                // reported below
            }
            throw new IllegalArgumentException(isInteger() ? "an integer" : "a finite number");
        }
    }

    /** Every field, in struct order, from the generated layout. */
    public static final List<Field> FIELDS = fields();
    private static final Map<String, Field> BY_NAME = new LinkedHashMap<>();

    static {
        for (Field f : FIELDS) {
            BY_NAME.put(f.name(), f);
        }
    }

    private static List<Field> fields() {
        List<Field> out = new ArrayList<>();
        for (MemoryLayout m : hspmn_block_params.layout().memberLayouts()) {
            String name = m.name().orElse("");
            if (!(m instanceof ValueLayout v) || name.startsWith("reserved")) {
                continue;
            }
            long offset = hspmn_block_params.layout().byteOffset(MemoryLayout.PathElement.groupElement(name));
            out.add(new Field(name, v, offset, constantNames(name)));
        }
        return List.copyOf(out);
    }

    /** {code: name} of hspmn.h's HSPMN_&lt;FIELD&gt;_&lt;NAME&gt; constants, as the reference's NAMED_FIELDS. */
    private static Map<Integer, String> constantNames(String field) {
        String prefix = "HSPMN_" + field.toUpperCase(Locale.ROOT) + "_";
        Map<Integer, String> names = new TreeMap<>();
        for (Method m : hspmn_h.class.getMethods()) {
            if (m.getName().startsWith(prefix) && m.getParameterCount() == 0 && m.getReturnType() == int.class
                    && Modifier.isStatic(m.getModifiers())) {
                try {
                    names.put((Integer) m.invoke(null), m.getName().substring(prefix.length()).toLowerCase(Locale.ROOT));
                } catch (ReflectiveOperationException e) {
                    throw new IllegalStateException("hspmn_h." + m.getName(), e);
                }
            }
        }
        return Collections.unmodifiableMap(names);
    }

    /** The field called {@code name} (C spelling), or null. */
    public static Field field(String name) {
        return BY_NAME.get(name);
    }

    private static final long SIZE = hspmn_block_params.layout().byteSize();

    /** A copy of the struct, reserved fields 0; backed by long[] so every field is aligned. */
    private final MemorySegment values;

    private HspmnConfig(MemorySegment values) {
        this.values = values;
    }

    private static MemorySegment blank() {
        return MemorySegment.ofArray(new long[(int) ((SIZE + 7) / 8)]).asSlice(0, SIZE);
    }

    /** MODEL.md's defaults, as the library gives them (hspmn_block_default_params). */
    public static HspmnConfig defaults() {
        return Defaults.VALUE;
    }

    private static final class Defaults {
        static final HspmnConfig VALUE = load();

        private static HspmnConfig load() {
            NativeLibrary.ensureLoaded(); // the bindings only look the library up
            try (Arena arena = Arena.ofConfined()) {
                return readFrom(hspmn_h.hspmn_block_default_params(arena));
            }
        }
    }

    public static Builder builder() {
        return new Builder(defaults());
    }

    public Builder toBuilder() {
        return new Builder(this);
    }

    /** Field {@code name} (C spelling): an Integer, Long, Float or Double as the struct holds it. */
    public Number get(String name) {
        Field f = field(name);
        if (f == null) {
            throw unknown(name);
        }
        return f.read(values);
    }

    /** Field {@code name} in its text form (a named field's name, else the number). */
    public String text(String name) {
        return field(name) == null ? null : field(name).format(get(name));
    }

    public int dim() {
        return hspmn_block_params.dim(values);
    }

    public int numHeads() {
        return hspmn_block_params.num_heads(values);
    }

    public int numKvHeads() {
        return hspmn_block_params.num_kv_heads(values);
    }

    public int mlpRatio() {
        return hspmn_block_params.mlp_ratio(values);
    }

    public int convKernel() {
        return hspmn_block_params.conv_kernel(values);
    }

    public Routing routing() {
        return Routing.of(hspmn_block_params.routing(values));
    }

    public float ropeBase() {
        return hspmn_block_params.rope_base(values);
    }

    public float sparsityK() {
        return hspmn_block_params.sparsity_k(values);
    }

    public float routerSparsityCoef() {
        return hspmn_block_params.router_sparsity_coef(values);
    }

    public float routerEntropyCoef() {
        return hspmn_block_params.router_entropy_coef(values);
    }

    public float normEps() {
        return hspmn_block_params.norm_eps(values);
    }

    /** Dh = D / H. */
    public int headDim() {
        return dim() / numHeads();
    }

    /** F = mlp_ratio * D, the SwiGLU hidden width. */
    public int hiddenDim() {
        return mlpRatio() * dim();
    }

    /**
     * Checks the config with the library's own rules (hspmn_block_params_validate, without allocating);
     * the exception names the first bad field, with the library's message.
     */
    public HspmnConfig validate() {
        NativeLibrary.ensureLoaded();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment p = hspmn_block_params.allocate(arena);
            writeTo(p);
            int status = hspmn_h.hspmn_block_params_validate(p);
            if (status != hspmn_h.HSPMN_OK()) {
                String msg = Native.lastError();
                String why = msg.startsWith("hspmn_block_params_validate: ") ? msg.substring(msg.indexOf(": ") + 2) : msg;
                throw new InvalidArgumentException(Status.of(status), "invalid block config: " + why, msg);
            }
        }
        return this;
    }

    private static InvalidArgumentException bad(String field, String why) {
        return new InvalidArgumentException(Status.INVALID_ARGUMENT, "invalid block config: " + field + " " + why);
    }

    private static InvalidArgumentException unknown(String name) {
        return new InvalidArgumentException(Status.INVALID_ARGUMENT, "block config: unknown field \"" + name + "\"");
    }

    /** Fills an {@code hspmn_block_params} struct (reserved fields 0). */
    public void writeTo(MemorySegment p) {
        MemorySegment.copy(values, 0, p, 0, SIZE);
    }

    public static HspmnConfig readFrom(MemorySegment p) {
        MemorySegment v = blank();
        for (Field f : FIELDS) {
            f.write(v, f.read(p));
        }
        return new HspmnConfig(v);
    }

    private static final Gson GSON = new GsonBuilder().setPrettyPrinting().create();

    public String toJson() {
        JsonObject o = new JsonObject();
        for (Field f : FIELDS) {
            Number v = f.read(values);
            if (f.names().isEmpty()) {
                o.addProperty(f.name(), v);
            } else {
                o.addProperty(f.name(), f.format(v));
            }
        }
        return GSON.toJson(o);
    }

    /** Parses the JSON form; absent fields keep their defaults, unknown fields are refused by name. */
    public static HspmnConfig fromJson(String json) {
        JsonObject o;
        try {
            JsonElement e = JsonParser.parseString(json);
            if (!e.isJsonObject()) {
                throw new InvalidArgumentException(Status.INVALID_ARGUMENT, "block config JSON must be an object, got " + e);
            }
            o = e.getAsJsonObject();
        } catch (JsonParseException e) {
            throw new InvalidArgumentException(Status.INVALID_ARGUMENT, "block config JSON does not parse: " + e.getMessage());
        }
        Builder b = builder();
        for (Map.Entry<String, JsonElement> e : o.entrySet()) {
            Field f = field(e.getKey());
            if (f == null) {
                throw new InvalidArgumentException(Status.INVALID_ARGUMENT,
                        "block config JSON: unknown field \"" + e.getKey() + "\"");
            }
            b.set(f.name(), jsonValue(f, e.getValue()));
        }
        return b.build();
    }

    private static Number jsonValue(Field f, JsonElement v) {
        if (!f.names().isEmpty()) {
            String expected = "must be " + String.join(" or ", f.names().values().stream().map(n -> "\"" + n + "\"").toList());
            if (!(v instanceof JsonPrimitive p && p.isString())) {
                throw bad(f.name(), expected + ", got " + v);
            }
            try {
                return f.parse(p.getAsString());
            } catch (IllegalArgumentException e) {
                throw bad(f.name(), expected + ", got " + v);
            }
        }
        if (!(v instanceof JsonPrimitive p && p.isNumber())) {
            throw bad(f.name(), "must be " + (f.isInteger() ? "an integer" : "a number") + ", got " + v);
        }
        if (!f.isInteger()) {
            return f.layout().carrier() == float.class ? (Number) p.getAsFloat() : (Number) p.getAsDouble();
        }
        try {
            BigDecimal d = new BigDecimal(p.getAsString());
            return f.layout().carrier() == int.class ? (Number) d.intValueExact() : (Number) d.longValueExact();
        } catch (ArithmeticException | NumberFormatException e) {
            throw bad(f.name(), "must be an integer, got " + v);
        }
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof HspmnConfig c && values.mismatch(c.values) == -1;
    }

    @Override
    public int hashCode() {
        return Arrays.hashCode(values.toArray(ValueLayout.JAVA_BYTE));
    }

    @Override
    public String toString() {
        StringJoiner j = new StringJoiner(", ", "HspmnConfig[", "]");
        for (Field f : FIELDS) {
            j.add(f.name() + "=" + f.format(f.read(values)));
        }
        return j.toString();
    }

    /** Mutable builder starting from the defaults (or from a config). */
    public static final class Builder {
        private final MemorySegment values = blank();

        private Builder(HspmnConfig c) {
            MemorySegment.copy(c.values, 0, values, 0, SIZE);
        }

        /**
         * Sets field {@code name} (C spelling) to {@code v}, a named field to its code.
         *
         * @throws InvalidArgumentException for an unknown field, or a fraction given to an integer field
         */
        public Builder set(String name, Number v) {
            Field f = field(name);
            if (f == null) {
                throw unknown(name);
            }
            try {
                f.write(values, v);
            } catch (ArithmeticException e) {
                throw bad(name, "must be an integer, got " + v);
            }
            return this;
        }

        public Builder dim(int v) { hspmn_block_params.dim(values, v); return this; }
        public Builder numHeads(int v) { hspmn_block_params.num_heads(values, v); return this; }
        public Builder numKvHeads(int v) { hspmn_block_params.num_kv_heads(values, v); return this; }
        public Builder mlpRatio(int v) { hspmn_block_params.mlp_ratio(values, v); return this; }
        public Builder convKernel(int v) { hspmn_block_params.conv_kernel(values, v); return this; }
        public Builder routing(Routing v) { hspmn_block_params.routing(values, v.code()); return this; }
        public Builder ropeBase(float v) { hspmn_block_params.rope_base(values, v); return this; }
        public Builder sparsityK(float v) { hspmn_block_params.sparsity_k(values, v); return this; }
        public Builder routerSparsityCoef(float v) { hspmn_block_params.router_sparsity_coef(values, v); return this; }
        public Builder routerEntropyCoef(float v) { hspmn_block_params.router_entropy_coef(values, v); return this; }
        public Builder normEps(float v) { hspmn_block_params.norm_eps(values, v); return this; }

        /** Builds without validating (so invalid configs can be constructed and shown to fail). */
        public HspmnConfig build() {
            MemorySegment v = blank();
            MemorySegment.copy(values, 0, v, 0, SIZE);
            return new HspmnConfig(v);
        }
    }
}
