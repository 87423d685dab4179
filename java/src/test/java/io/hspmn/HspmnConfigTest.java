package io.hspmn;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class HspmnConfigTest {
    @Test
    void defaultsAreModelMd() {
        HspmnConfig c = HspmnConfig.defaults().validate();
        assertEquals(2048, c.dim());
        assertEquals(16, c.numHeads());
        assertEquals(4, c.numKvHeads());
        assertEquals(128, c.headDim());
        assertEquals(8192, c.hiddenDim());
        assertEquals(Routing.TOPK, c.routing());
        assertEquals(0.2f, c.sparsityK());
    }

    @Test
    void defaultsMatchTheLibrary() {
        NativeLibrary.ensureLoaded(); // the bindings are called directly here, before any API class loads it
        try (var arena = java.lang.foreign.Arena.ofConfined()) {
            var p = io.hspmn.ffi.hspmn_h.hspmn_block_default_params(arena);
            assertEquals(HspmnConfig.defaults(), HspmnConfig.readFrom(p));
        }
    }

    @Test
    void jsonRoundTrip() {
        HspmnConfig c = HspmnConfig.builder().dim(48).numHeads(4).numKvHeads(2).routing(Routing.THRESHOLD)
                .sparsityK(0.3f).normEps(1e-5f).build();
        String json = c.toJson();
        assertTrue(json.contains("\"num_kv_heads\": 2") && json.contains("\"routing\": \"threshold\""), json);
        assertEquals(c, HspmnConfig.fromJson(json));
    }

    @Test
    void readsTheGoldenSpelling() {
        String json = "{\"dim\": 32, \"num_heads\": 4, \"num_kv_heads\": 2, \"mlp_ratio\": 4, \"conv_kernel\": 3, "
                + "\"routing\": \"topk\", \"rope_base\": 10000.0, \"sparsity_k\": 0.2, \"router_sparsity_coef\": 0.1, "
                + "\"router_entropy_coef\": 0.01, \"norm_eps\": 1e-06}";
        HspmnConfig c = HspmnConfig.fromJson(json);
        assertEquals(32, c.dim());
        assertEquals(1e-6f, c.normEps());
    }

    @Test
    void unknownFieldNamed() {
        var e = assertThrows(InvalidArgumentException.class, () -> HspmnConfig.fromJson("{\"dim\": 32, \"head_dims\": 8}"));
        assertTrue(e.getMessage().contains("head_dims"), e.getMessage());
    }

    @Test
    void badValuesNamed() {
        var e = assertThrows(InvalidArgumentException.class, () -> HspmnConfig.fromJson("{\"dim\": 32.5}"));
        assertTrue(e.getMessage().contains("dim"), e.getMessage());
        e = assertThrows(InvalidArgumentException.class, () -> HspmnConfig.fromJson("{\"routing\": \"random\"}"));
        assertTrue(e.getMessage().contains("routing"), e.getMessage());
        e = assertThrows(InvalidArgumentException.class, () -> HspmnConfig.fromJson("[1, 2]"));
        assertTrue(e.getMessage().contains("object"), e.getMessage());
        e = assertThrows(InvalidArgumentException.class, () -> HspmnConfig.fromJson("{\"dim\": "));
        assertTrue(e.getMessage().contains("parse"), e.getMessage());
    }
}
