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
    void fieldsAreTheStructs() {
        var names = new java.util.ArrayList<String>();
        for (var m : io.hspmn.ffi.hspmn_block_params.layout().memberLayouts()) {
            m.name().filter(n -> !n.startsWith("reserved")).ifPresent(names::add);
        }
        assertEquals(names, HspmnConfig.FIELDS.stream().map(HspmnConfig.Field::name).toList());
        assertEquals(java.util.Map.of(0, "topk", 1, "threshold"), HspmnConfig.field("routing").names());
        assertTrue(HspmnConfig.field("dim").isInteger() && !HspmnConfig.field("norm_eps").isInteger());
        assertEquals("RMSNorm epsilon", HspmnConfig.field("norm_eps").doc()); // hspmn.h's comment, less the default
    }

    @Test
    void structRoundTrip() {
        HspmnConfig c = HspmnConfig.builder().dim(48).routing(Routing.THRESHOLD).normEps(1e-5f).build();
        try (var arena = java.lang.foreign.Arena.ofConfined()) {
            var p = io.hspmn.ffi.hspmn_block_params.allocate(arena);
            p.fill((byte) 0x55);
            c.writeTo(p);
            assertEquals(0, io.hspmn.ffi.hspmn_block_params.reserved(p));
            assertEquals(c, HspmnConfig.readFrom(p));
        }
    }

    @Test
    void byName() {
        HspmnConfig c = HspmnConfig.builder().set("norm_eps", 1e-5f).set("num_heads", 8).set("routing", 1).build();
        assertEquals(1e-5f, c.normEps());
        assertEquals(1e-5f, c.get("norm_eps"));
        assertEquals(8, c.get("num_heads"));
        assertEquals(Routing.THRESHOLD, c.routing());
        assertEquals("threshold", c.text("routing"));
        assertEquals(c, c.toBuilder().build());
        var e = assertThrows(InvalidArgumentException.class, () -> HspmnConfig.builder().set("dim", 2.5));
        assertTrue(e.getMessage().contains("dim"), e.getMessage());
        e = assertThrows(InvalidArgumentException.class, () -> HspmnConfig.builder().set("head_dims", 8));
        assertTrue(e.getMessage().contains("head_dims"), e.getMessage());
        assertEquals(8, HspmnConfig.field("dim").parse(" 8 "));
        assertEquals(1, HspmnConfig.field("routing").parse("Threshold"));
        assertThrows(IllegalArgumentException.class, () -> HspmnConfig.field("dim").parse("8.5"));
        assertThrows(IllegalArgumentException.class, () -> HspmnConfig.field("norm_eps").parse("inf"));
    }

    @Test
    void validateIsTheLibrarys() {
        var e = assertThrows(InvalidArgumentException.class,
                () -> HspmnConfig.builder().dim(30).numHeads(4).build().validate());
        assertTrue(e.getMessage().startsWith("invalid block config: num_heads (4) must divide dim (30)"), e.getMessage());
        assertTrue(e.nativeMessage().startsWith("hspmn_block_params_validate: "), e.nativeMessage());
        e = assertThrows(InvalidArgumentException.class, () -> HspmnConfig.builder().normEps(0f).build().validate());
        assertTrue(e.getMessage().contains("norm_eps"), e.getMessage());
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
    void absentFieldsAreTheDefaults() {
        // a config written before a field existed (an older checkpoint) reads that field as its default
        HspmnConfig c = HspmnConfig.fromJson("{\"dim\": 32, \"num_heads\": 4}");
        assertEquals(HspmnConfig.builder().dim(32).numHeads(4).build(), c);
        assertEquals(HspmnConfig.defaults().get("norm_eps"), c.get("norm_eps"));
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
