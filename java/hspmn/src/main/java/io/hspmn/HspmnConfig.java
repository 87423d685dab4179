package io.hspmn;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import io.hspmn.ffi.hspmn_block_params;

import java.lang.foreign.MemorySegment;
import java.math.BigDecimal;
import java.util.Map;
import java.util.Objects;

/**
 * The configuration of one block ({@code hspmn_block_params}); defaults are MODEL.md's.
 * JSON uses the C field names (snake_case) and routing as "topk"/"threshold".
 */
public record HspmnConfig(int dim, int numHeads, int numKvHeads, int mlpRatio, int convKernel, Routing routing,
                          float ropeBase, float sparsityK, float routerSparsityCoef, float routerEntropyCoef,
                          float normEps) {

    public HspmnConfig {
        Objects.requireNonNull(routing, "routing");
    }

    public static HspmnConfig defaults() {
        return new HspmnConfig(2048, 16, 4, 4, 3, Routing.TOPK, 10000f, 0.2f, 0.1f, 0.01f, 1e-6f);
    }

    public static Builder builder() {
        return new Builder(defaults());
    }

    public Builder toBuilder() {
        return new Builder(this);
    }

    /** Dh = D / H. */
    public int headDim() {
        return dim / numHeads;
    }

    /** F = mlp_ratio * D, the SwiGLU hidden width. */
    public int hiddenDim() {
        return mlpRatio * dim;
    }

    /** Largest dim the library accepts (keeps every derived element count far inside int64). */
    public static final int MAX_DIM = 1 << 16;
    public static final int MAX_MLP_RATIO = 64;
    public static final int MAX_CONV_KERNEL = 1024;

    /**
     * Same rules, in the same order, as hspmn_block_params_validate (native/src/core/block_config.cpp);
     * the exception names the first bad field, as the library's message does.
     */
    public HspmnConfig validate() {
        if (dim <= 0 || dim > MAX_DIM) {
            throw bad("dim", "(" + dim + ") must be in [1, " + MAX_DIM + "]");
        }
        positive("num_heads", numHeads);
        positive("num_kv_heads", numKvHeads);
        if (dim % numHeads != 0) {
            throw bad("num_heads", "(" + numHeads + ") must divide dim (" + dim + ")");
        }
        if (numHeads % numKvHeads != 0) {
            throw bad("num_kv_heads", "(" + numKvHeads + ") must divide num_heads (" + numHeads + ")");
        }
        if (headDim() % 2 != 0) {
            throw bad("num_heads", "gives head_dim = dim / num_heads (" + dim + " / " + numHeads + " = " + headDim()
                    + "), which must be even: rotary embedding rotates pairs");
        }
        if (mlpRatio <= 0 || mlpRatio > MAX_MLP_RATIO) {
            throw bad("mlp_ratio", "(" + mlpRatio + ") must be in [1, " + MAX_MLP_RATIO + "]");
        }
        if (convKernel < 1 || convKernel > MAX_CONV_KERNEL) {
            throw bad("conv_kernel", "(" + convKernel + ") must be in [1, " + MAX_CONV_KERNEL + "]");
        }
        if (!(ropeBase > 1f) || Float.isInfinite(ropeBase)) {
            throw bad("rope_base", "(" + ropeBase + ") must be finite and > 1");
        }
        if (!(sparsityK > 0f && sparsityK <= 1f)) {
            throw bad("sparsity_k", "(" + sparsityK + ") must be in (0, 1]");
        }
        if (!(routerSparsityCoef >= 0f) || Float.isInfinite(routerSparsityCoef)) {
            throw bad("router_sparsity_coef", "(" + routerSparsityCoef + ") must be finite and >= 0");
        }
        if (!(routerEntropyCoef >= 0f) || Float.isInfinite(routerEntropyCoef)) {
            throw bad("router_entropy_coef", "(" + routerEntropyCoef + ") must be finite and >= 0");
        }
        if (!(normEps > 0f) || Float.isInfinite(normEps)) {
            throw bad("norm_eps", "(" + normEps + ") must be finite and > 0");
        }
        return this;
    }

    private static void positive(String field, int v) {
        if (v <= 0) {
            throw bad(field, "(" + v + ") must be positive");
        }
    }

    private static InvalidArgumentException bad(String field, String why) {
        return new InvalidArgumentException(Status.INVALID_ARGUMENT, "invalid block config: " + field + " " + why);
    }

    /** Fills an {@code hspmn_block_params} struct. */
    public void writeTo(MemorySegment p) {
        hspmn_block_params.dim(p, dim);
        hspmn_block_params.num_heads(p, numHeads);
        hspmn_block_params.num_kv_heads(p, numKvHeads);
        hspmn_block_params.mlp_ratio(p, mlpRatio);
        hspmn_block_params.conv_kernel(p, convKernel);
        hspmn_block_params.routing(p, routing.code());
        hspmn_block_params.rope_base(p, ropeBase);
        hspmn_block_params.sparsity_k(p, sparsityK);
        hspmn_block_params.router_sparsity_coef(p, routerSparsityCoef);
        hspmn_block_params.router_entropy_coef(p, routerEntropyCoef);
        hspmn_block_params.norm_eps(p, normEps);
        hspmn_block_params.reserved(p, 0);
    }

    public static HspmnConfig readFrom(MemorySegment p) {
        return new HspmnConfig(hspmn_block_params.dim(p), hspmn_block_params.num_heads(p),
                hspmn_block_params.num_kv_heads(p), hspmn_block_params.mlp_ratio(p),
                hspmn_block_params.conv_kernel(p), Routing.of(hspmn_block_params.routing(p)),
                hspmn_block_params.rope_base(p), hspmn_block_params.sparsity_k(p),
                hspmn_block_params.router_sparsity_coef(p), hspmn_block_params.router_entropy_coef(p),
                hspmn_block_params.norm_eps(p));
    }

    private static final Gson GSON = new GsonBuilder().setPrettyPrinting().create();

    public String toJson() {
        JsonObject o = new JsonObject();
        o.addProperty("dim", dim);
        o.addProperty("num_heads", numHeads);
        o.addProperty("num_kv_heads", numKvHeads);
        o.addProperty("mlp_ratio", mlpRatio);
        o.addProperty("conv_kernel", convKernel);
        o.addProperty("routing", routing.jsonName());
        o.addProperty("rope_base", ropeBase);
        o.addProperty("sparsity_k", sparsityK);
        o.addProperty("router_sparsity_coef", routerSparsityCoef);
        o.addProperty("router_entropy_coef", routerEntropyCoef);
        o.addProperty("norm_eps", normEps);
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
        for (Map.Entry<String, JsonElement> f : o.entrySet()) {
            String k = f.getKey();
            JsonElement v = f.getValue();
            switch (k) {
                case "dim" -> b.dim(intField(k, v));
                case "num_heads" -> b.numHeads(intField(k, v));
                case "num_kv_heads" -> b.numKvHeads(intField(k, v));
                case "mlp_ratio" -> b.mlpRatio(intField(k, v));
                case "conv_kernel" -> b.convKernel(intField(k, v));
                case "routing" -> {
                    if (!(v instanceof JsonPrimitive p && p.isString())) {
                        throw bad("routing", "must be \"topk\" or \"threshold\", got " + v);
                    }
                    try {
                        b.routing(Routing.parse(p.getAsString()));
                    } catch (IllegalArgumentException e) {
                        throw bad("routing", "must be \"topk\" or \"threshold\", got " + v);
                    }
                }
                case "rope_base" -> b.ropeBase(floatField(k, v));
                case "sparsity_k" -> b.sparsityK(floatField(k, v));
                case "router_sparsity_coef" -> b.routerSparsityCoef(floatField(k, v));
                case "router_entropy_coef" -> b.routerEntropyCoef(floatField(k, v));
                case "norm_eps" -> b.normEps(floatField(k, v));
                default -> throw new InvalidArgumentException(Status.INVALID_ARGUMENT,
                        "block config JSON: unknown field \"" + k + "\"");
            }
        }
        return b.build();
    }

    private static int intField(String k, JsonElement v) {
        if (!(v instanceof JsonPrimitive p && p.isNumber())) {
            throw bad(k, "must be an integer, got " + v);
        }
        try {
            return new BigDecimal(p.getAsString()).intValueExact();
        } catch (ArithmeticException | NumberFormatException e) {
            throw bad(k, "must be an integer, got " + v);
        }
    }

    private static float floatField(String k, JsonElement v) {
        if (!(v instanceof JsonPrimitive p && p.isNumber())) {
            throw bad(k, "must be a number, got " + v);
        }
        return p.getAsFloat();
    }

    /** Mutable builder starting from the defaults (or from a config). */
    public static final class Builder {
        private int dim, numHeads, numKvHeads, mlpRatio, convKernel;
        private Routing routing;
        private float ropeBase, sparsityK, routerSparsityCoef, routerEntropyCoef, normEps;

        private Builder(HspmnConfig c) {
            dim = c.dim;
            numHeads = c.numHeads;
            numKvHeads = c.numKvHeads;
            mlpRatio = c.mlpRatio;
            convKernel = c.convKernel;
            routing = c.routing;
            ropeBase = c.ropeBase;
            sparsityK = c.sparsityK;
            routerSparsityCoef = c.routerSparsityCoef;
            routerEntropyCoef = c.routerEntropyCoef;
            normEps = c.normEps;
        }

        public Builder dim(int v) { dim = v; return this; }
        public Builder numHeads(int v) { numHeads = v; return this; }
        public Builder numKvHeads(int v) { numKvHeads = v; return this; }
        public Builder mlpRatio(int v) { mlpRatio = v; return this; }
        public Builder convKernel(int v) { convKernel = v; return this; }
        public Builder routing(Routing v) { routing = v; return this; }
        public Builder ropeBase(float v) { ropeBase = v; return this; }
        public Builder sparsityK(float v) { sparsityK = v; return this; }
        public Builder routerSparsityCoef(float v) { routerSparsityCoef = v; return this; }
        public Builder routerEntropyCoef(float v) { routerEntropyCoef = v; return this; }
        public Builder normEps(float v) { normEps = v; return this; }

        /** Builds without validating (so invalid configs can be constructed and shown to fail). */
        public HspmnConfig build() {
            return new HspmnConfig(dim, numHeads, numKvHeads, mlpRatio, convKernel, routing, ropeBase, sparsityK,
                    routerSparsityCoef, routerEntropyCoef, normEps);
        }
    }
}
