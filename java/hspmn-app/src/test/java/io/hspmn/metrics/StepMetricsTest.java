package io.hspmn.metrics;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class StepMetricsTest {
    static StepMetrics sample(long step) {
        return new StepMetrics(step, 2.5 - step * 1e-3, 0.012, 3.43, new double[] {0.61, 0.24}, 3e-4, 1.7, 12345.6, 1L << 33, null, null);
    }

    @Test
    void writesTheIssuesFieldNames() {
        JsonObject o = JsonParser.parseString(sample(7).withValidation(2.2, 3.17, new double[] {0.19, 0.22}).toJson()).getAsJsonObject();
        assertEquals(List.of("step", "loss", "ce", "aux", "bits_per_byte", "routed_fraction", "lr", "grad_norm", "tok_s",
                "memory_bytes", "val_loss", "val_bpb", "val_routed_fraction"), List.copyOf(o.keySet()));
        assertEquals(3.43 * Math.log(2), o.get("ce").getAsDouble(), 1e-15);
        assertEquals(0.22, o.get("val_routed_fraction").getAsJsonArray().get(1).getAsDouble());
        assertEquals(7, o.get("step").getAsLong());
        assertEquals(0.24, o.get("routed_fraction").getAsJsonArray().get(1).getAsDouble());
        assertEquals(1L << 33, o.get("memory_bytes").getAsLong());
        assertEquals(3.17, o.get("val_bpb").getAsDouble());
    }

    @Test
    void leavesOutValidationWhenNotRun() {
        String json = sample(1).toJson();
        assertFalse(json.contains("val_"), json);
        assertFalse(json.contains("\n"));
        StepMetrics back = StepMetrics.fromJson(json);
        assertNull(back.valLoss());
        assertFalse(back.hasValidation());
    }

    @Test
    void roundTrips() {
        StepMetrics m = sample(123).withValidation(2.0, 2.885);
        assertEquals(m, StepMetrics.fromJson(m.toJson()));
        StepMetrics r = sample(124).withValidation(2.0, 2.885, new double[] {0.2, Double.NaN});
        assertEquals(r, StepMetrics.fromJson(r.toJson()));
        assertNull(m.valRoutedFraction());
        assertEquals(sample(5), StepMetrics.fromJson(sample(5).toJson()));
    }

    @Test
    void nonFiniteBecomesNullAndReadsAsNaN() {
        StepMetrics m = new StepMetrics(9, Double.NaN, Double.POSITIVE_INFINITY, Double.NaN, new double[] {Double.NaN, 0.5}, 1e-3,
                Double.NEGATIVE_INFINITY, 10, 0, Double.NaN, null);
        String json = m.toJson();
        assertFalse(json.contains("NaN") || json.contains("Infinity"), json);
        JsonObject o = JsonParser.parseString(json).getAsJsonObject();
        assertTrue(o.get("loss").isJsonNull());
        assertTrue(o.get("val_loss").isJsonNull());
        StepMetrics back = StepMetrics.fromJson(json);
        assertTrue(Double.isNaN(back.loss()) && Double.isNaN(back.aux()) && Double.isNaN(back.gradNorm()));
        assertArrayEquals(new double[] {Double.NaN, 0.5}, back.routedFraction());
        assertTrue(Double.isNaN(back.valLoss()));
    }

    @Test
    void refusesLinesWithoutAStep() {
        assertThrows(IllegalArgumentException.class, () -> StepMetrics.fromJson("{\"loss\": 1.0}"));
        assertThrows(IllegalArgumentException.class, () -> StepMetrics.fromJson("{\"step\": \"x\"}"));
        assertThrows(IllegalArgumentException.class, () -> StepMetrics.fromJson("[1, 2]"));
        assertThrows(IllegalArgumentException.class, () -> StepMetrics.fromJson("{\"step\": 3, \"loss\": 2.1, \"aux"));
        assertEquals(4, StepMetrics.fromJson("{\"step\": 4, \"future_field\": {\"a\": 1}}").step());
    }

    @Test
    void routedFractionIsCopied() {
        double[] r = {0.5};
        StepMetrics m = new StepMetrics(1, 1, 0, 1, r, 0, 0, 0, 0, null, null);
        r[0] = 0.9;
        m.routedFraction()[0] = 0.7;
        assertEquals(0.5, m.routedFraction()[0]);
    }
}
