package io.hspmn.train;

import com.google.gson.JsonObject;
import io.hspmn.Backend;
import io.hspmn.HspmnConfig;
import io.hspmn.Routing;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The option table: every option reads back what it sets, the stored form round-trips, resume merges by scope. */
class TrainOptionsTest {
    static TrainOptions sample() {
        TrainOptions.Builder b = otherBlockValues(TrainOptions.builder().data(Path.of("/data/x.txt")).out(Path.of("/tmp/o")).dim(96).layers(3).heads(6)
                .kvHeads(3).mlpRatio(3).convKernel(4).routing(Routing.TOPK).rho(0.3f).routerSparsityCoef(0.5f)
                .routerEntropyCoef(0.05f).seqLen(100).batch(5).gradAccum(3).steps(77).lr(1.5e-4f).beta2(0.99f).warmup(7)
                .minLrRatio(0.25f).weightDecay(0.05f).clip(0.5f).auxWarmup(9).routerBiasRate(0.03f).seed(-12345678901L).dropout(0.25f).valFraction(0.125)
                .evalEvery(11).evalBatches(2).saveEvery(13).stopAfter(20).maxSkipped(2).backend(Backend.CPU).threads(3).resume(true).keepBest(true).recompute(true)
                .earlyStop(6));
        b.parallel().gpus(2).nodes(3).nodeRank(1).comm("nccl").commIdFile(Path.of("/tmp/comm.id")).commTimeoutS(30)
                .shardOptimizer(true).bucketMib(4);
        return b.build();
    }

    /**
     * Gives every block field the typed setters leave at its default another value (the next name, default + 1,
     * or x 1.5), so the options of a field added to hspmn_block_params are covered with no edit here.
     */
    private static TrainOptions.Builder otherBlockValues(TrainOptions.Builder b) {
        HspmnConfig defaults = TrainOptions.builder().build().block();
        HspmnConfig.Builder block = b.build().block().toBuilder();
        for (HspmnConfig.Field f : HspmnConfig.FIELDS) {
            Number d = defaults.get(f.name());
            if (!d.equals(block.build().get(f.name()))) {
                continue;
            }
            if (!f.names().isEmpty()) {
                block.set(f.name(), f.names().keySet().stream().filter(k -> k != d.intValue()).findFirst().orElseThrow());
            } else {
                block.set(f.name(), f.isInteger() ? (Number) (d.longValue() + 1)
                        : (Number) (d.doubleValue() == 0 ? 0.5 : d.doubleValue() * 1.5));
            }
        }
        return b.block(block.build());
    }

    @Test
    void everyOptionReadsBackWhatItSets() {
        TrainOptions s = sample();
        TrainOptions defaults = TrainOptions.builder().build();
        Set<String> names = new HashSet<>();
        for (TrainOptions.Option o : TrainOptions.OPTIONS) {
            assertTrue(names.add(o.name()), "option --" + o.name() + " twice");
            assertFalse(o.help().isBlank(), o.name());
            String v = o.get().apply(s);
            TrainOptions.Builder b = TrainOptions.builder();
            o.set().accept(b, v);
            assertEquals(v, o.get().apply(b.build()), "--" + o.name());
            assertNotEquals(o.get().apply(defaults), v, "--" + o.name() + ": the sample must differ from the default");
        }
        assertEquals(s, s.toBuilder().build());
    }

    @Test
    void storedOptionsWithoutRouterBiasRateReadItAsOff() {
        // Checkpoints written before router bias control trained without it; a resume must too.
        JsonObject stored = sample().toStoredJson();
        assertTrue(stored.has("router_bias_rate"));
        stored.remove("router_bias_rate");
        assertEquals(0f, TrainOptions.applyStored(TrainOptions.builder(), stored).build().routerBiasRate());
        assertEquals(TrainOptions.DEFAULT_ROUTER_BIAS_RATE, TrainOptions.builder().build().routerBiasRate());
    }

    @Test
    void routerBiasRateMustBeFiniteAndNonNegative() {
        for (float bad : new float[] {-0.01f, Float.NaN, Float.POSITIVE_INFINITY}) {
            TrainOptions o = sample().toBuilder().resume(false).stopAfter(0).routerBiasRate(bad).build();
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, o::validate);
            assertTrue(e.getMessage().contains("--router-bias-rate"), e.getMessage());
        }
    }

    @Test
    void storedFormKeepsRunAndAdjustableOptionsOnly() {
        TrainOptions s = sample();
        JsonObject stored = s.toStoredJson();
        for (TrainOptions.Option o : TrainOptions.OPTIONS) {
            boolean kept = o.scope() == TrainOptions.Scope.RUN || o.scope() == TrainOptions.Scope.ADJUSTABLE;
            assertEquals(kept, stored.has(o.jsonKey()), o.name());
        }
        assertEquals(1.5e-4, stored.get("lr").getAsDouble(), 1e-12);
        assertEquals(-12345678901L, stored.get("seed").getAsLong());
        TrainOptions back = TrainOptions.applyStored(TrainOptions.builder(), stored).build();
        for (TrainOptions.Option o : TrainOptions.OPTIONS) {
            if (stored.has(o.jsonKey())) {
                assertEquals(o.get().apply(s), o.get().apply(back), o.name());
            }
        }
        stored.addProperty("bogus", 1);
        assertThrows(IllegalArgumentException.class, () -> TrainOptions.applyStored(TrainOptions.builder(), stored));
    }

    @Test
    void resumeChangesOnlyWhatARunMayChange() {
        TrainOptions stored = sample().toBuilder().resume(false).stopAfter(0).build();
        TrainOptions r = TrainOptions.forResume(stored, Map.of("steps", "200", "backend", "cuda", "lr", "1.5e-4", "dim", "96"));
        assertEquals(200, r.steps());
        assertEquals(Backend.CUDA, r.backend());
        assertTrue(r.resume());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TrainOptions.forResume(stored, Map.of("lr", "2e-4", "heads", "4", "steps", "9")));
        assertTrue(e.getMessage().contains("--lr 2e-4 (the checkpoint has 1.5E-4)") && e.getMessage().contains("--heads 4"),
                e.getMessage());
    }

    @Test
    void validationNamesTheOption() {
        TrainOptions.Builder ok = TrainOptions.builder().data(Path.of("d")).out(Path.of("o"));
        ok.build().validate();
        assertEquals(100, ok.build().auxWarmup(), "aux warm-up defaults to --warmup");
        Map<String, String> bad = Map.of("seq-len", "0", "grad-accum", "0", "min-lr-ratio", "1.5", "clip", "-1",
                "val-fraction", "1", "stop-after", "5000", "kv-heads", "3", "rho", "0");
        for (Map.Entry<String, String> e : bad.entrySet()) {
            TrainOptions t = TrainOptions.builder().data(Path.of("d")).out(Path.of("o")).set(e.getKey(), e.getValue()).build();
            IllegalArgumentException x = assertThrows(IllegalArgumentException.class, t::validate, e.getKey());
            String name = e.getKey().equals("kv-heads") ? "num_kv_heads" : e.getKey().equals("rho") ? "sparsity_k" : "--" + e.getKey();
            assertTrue(x.getMessage().contains(name), x.getMessage());
        }
    }

    @Test
    void dropoutIsARunOptionInZeroToOne() {
        TrainOptions.Option o = TrainOptions.option("dropout");
        assertEquals(TrainOptions.Scope.RUN, o.scope());
        assertEquals(0f, TrainOptions.builder().build().dropout(), "off by default");
        for (String v : new String[] {"0", "0.2", "0.999"}) {
            TrainOptions.builder().data(Path.of("d")).out(Path.of("o")).set("dropout", v).build().validate();
        }
        for (String v : new String[] {"1", "1.5", "-0.1"}) {
            TrainOptions t = TrainOptions.builder().data(Path.of("d")).out(Path.of("o")).set("dropout", v).build();
            IllegalArgumentException x = assertThrows(IllegalArgumentException.class, t::validate, v);
            assertTrue(x.getMessage().contains("--dropout") && x.getMessage().contains("[0, 1)"), x.getMessage());
        }
        assertThrows(IllegalArgumentException.class, () -> TrainOptions.builder().set("dropout", "NaN"));
        // stored with the run; a checkpoint written before the option existed reads as 0
        JsonObject stored = sample().toStoredJson();
        assertEquals(0.25, stored.get("dropout").getAsDouble(), 0.0);
        stored.remove("dropout");
        assertEquals(0f, TrainOptions.applyStored(TrainOptions.builder(), stored).build().dropout());
        // and a resumed run must keep it
        TrainOptions run = sample().toBuilder().resume(false).stopAfter(0).build();
        assertEquals(0.25f, TrainOptions.forResume(run, Map.of("dropout", "0.25")).dropout());
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TrainOptions.forResume(run, Map.of("dropout", "0.1")));
        assertTrue(e.getMessage().contains("--dropout 0.1 (the checkpoint has 0.25)"), e.getMessage());
    }
}
