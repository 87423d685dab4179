package io.hspmn;

import io.hspmn.checkpoint.LanguageModelLayout;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The language-model API on the CPU backend: names, shapes, round trips, loss, a step, misuse. */
class LanguageModelTest extends ModelFixture {
    static final int B = 2;
    static final int S = 24;
    static final HspmnConfig BLOCK = HspmnConfig.builder().dim(32).numHeads(4).numKvHeads(2).mlpRatio(2)
            .routing(Routing.THRESHOLD).build();
    static final ModelConfig CONFIG = ModelConfig.byteLevel(2, BLOCK);

    @BeforeEach
    void setUp() {
        open(CONFIG, 5, B, S, 11);
    }

    @Test
    void namesOrderAndShapesAreTheStateDict() {
        Map<String, long[]> want = LanguageModelLayout.shapes(BLOCK, 256, 2);
        assertEquals(List.copyOf(want.keySet()), model.paramNames());
        assertEquals("embedding", model.paramNames().getFirst());
        assertEquals("norm", model.paramNames().getLast());
        for (String name : model.paramNames()) {
            assertArrayEquals(want.get(name), model.paramShape(name), name);
        }
        assertEquals(CONFIG, model.config());
        long elements = 0;
        for (String name : model.paramNames()) {
            elements += model.param(name).length;
        }
        assertEquals(CONFIG.parameterCount(), elements);
    }

    @Test
    void masterWeightsAndMomentsRoundTripExactly() {
        SplittableRandom r = new SplittableRandom(3);
        for (String name : List.of("embedding", "blocks.1.attn.k", "norm", "blocks.0.router.b")) {
            float[] v = new float[model.param(name).length];
            for (int i = 0; i < v.length; i++) {
                v[i] = (float) r.nextGaussian() * 0.1f + 1e-7f * i; // not bf16-representable: the master is f32
            }
            model.setParam(name, v);
            assertArrayEquals(v, model.param(name), name);
            float[] m = v.clone();
            m[0] = 42.5f;
            model.setMoment(name, Moment.M, m);
            float[] sq = new float[v.length];
            Arrays.fill(sq, 0.25f);
            model.setMoment(name, Moment.V, sq);
            assertArrayEquals(m, model.moment(name, Moment.M), name);
            assertArrayEquals(sq, model.moment(name, Moment.V), name);
        }
        // bf16 view of the master is the rounding of it
        try (Tensor bf = Tensor.create(ctx, DType.BF16, 32)) {
            model.getParam("norm", bf);
            float[] master = model.param("norm");
            float[] rounded = bf.toFloatArray();
            for (int i = 0; i < master.length; i++) {
                assertEquals(BFloat16.toFloat(BFloat16.fromFloat(master[i])), rounded[i], "norm[" + i + "]");
            }
        }
    }

    @Test
    void initialLossIsAboutLnV() {
        LossResult r = model.forward(tokens, targets, ModelForwardOptions.evaluation());
        // Tied head on unit-RMS rows: logits have variance D * 1/(3D) = 1/3, so CE ~ ln 256 + 1/6 (5.83 seen at D = 32).
        assertTrue(r.crossEntropy() > Math.log(256) && r.crossEntropy() < Math.log(256) + 0.5, "initial cross-entropy "
                + r.crossEntropy() + ", ln 256 = " + Math.log(256));
        float auxSum = 0;
        for (float a : r.aux()) {
            auxSum += a;
        }
        assertEquals(r.crossEntropy() + auxSum, r.loss(), 1e-5f);
        assertEquals(2, r.numLayers());
        for (float f : r.routedFraction()) {
            assertTrue(f >= 0 && f <= 1, Arrays.toString(r.routedFraction()));
        }
        assertEquals(r.crossEntropy() / Math.log(2), r.bitsPerToken(), 1e-6);
    }

    @Test
    void aStepMovesTheWeightsAndTheMoments() {
        Map<String, float[]> before = new java.util.LinkedHashMap<>();
        for (String name : model.paramNames()) {
            before.put(name, model.param(name));
            assertTrue(allZero(model.moment(name, Moment.M)), name + ": moments start at zero");
        }
        LossResult r0 = model.forward(tokens, targets, ModelForwardOptions.training(1, 0, 0.8f));
        model.backward(1f, false);
        double sq = 0;
        for (String name : model.paramNames()) {
            for (float g : model.grad(name)) {
                assertTrue(Float.isFinite(g), name);
                sq += (double) g * g;
            }
        }
        assertFalse(allZero(model.grad("embedding")));
        assertFalse(allZero(model.grad("blocks.0.attn.q")));
        AdamwResult u = model.adamwStep(AdamwOptions.of(1, 1e-2f).withWeightDecay(0.1f).withMaxGradNorm(1f));
        assertTrue(u.applied());
        assertEquals(Math.sqrt(sq), u.gradNorm(), 1e-5 * Math.sqrt(sq), "grad norm is the global L2 norm before clipping");
        int moved = 0;
        for (String name : model.paramNames()) {
            if (!Arrays.equals(before.get(name), model.param(name))) {
                moved++;
            }
        }
        assertEquals(model.paramNames().size(), moved, "every parameter has a gradient or decays, so every one moves");
        assertFalse(allZero(model.moment("embedding", Moment.M)));
        assertFalse(allZero(model.moment("embedding", Moment.V)));
        // a few more steps on the same batch bring its loss down
        for (int s = 1; s < 8; s++) {
            model.forward(tokens, targets, ModelForwardOptions.training(1, s, 0.5f));
            model.backward(1f, false);
            assertTrue(model.adamwStep(AdamwOptions.of(s + 1, 1e-2f)).applied());
        }
        LossResult r1 = model.forward(tokens, targets, ModelForwardOptions.training(1, 0, 0.8f).withNoise(false));
        assertTrue(r1.crossEntropy() < r0.crossEntropy() - 0.1, r0.crossEntropy() + " -> " + r1.crossEntropy());
    }

    @Test
    void accumulatingTwoHalvesEqualsOneWhole() {
        model.forward(tokens, targets, ModelForwardOptions.training(1, 0, -1f));
        model.backward(1f, false);
        float[] whole = model.grad("blocks.1.reflex.up");
        model.forward(tokens, targets, ModelForwardOptions.training(1, 0, -1f));
        model.backward(0.5f, false);
        model.forward(tokens, targets, ModelForwardOptions.training(1, 0, -1f));
        model.backward(0.5f, true);
        float[] halves = model.grad("blocks.1.reflex.up");
        for (int i = 0; i < whole.length; i++) {
            assertEquals(whole[i], halves[i], 1e-6f * (1 + Math.abs(whole[i])), "element " + i);
        }
    }

    /** The logits of the last position, for every prefix, give back the forward's mean cross-entropy: causal. */
    @Test
    void logitsOfEachPrefixReproduceTheLoss() {
        int s = 12;
        int[][] batch = randomBatch(1, s, 4);
        try (Tensor tok = Tensor.ofInts(ctx, batch[0], 1, s); Tensor tgt = Tensor.ofInts(ctx, batch[1], 1, s)) {
            double ce = model.forward(tok, tgt, ModelForwardOptions.evaluation()).crossEntropy();
            double sum = 0;
            for (int t = 1; t <= s; t++) {
                try (Tensor prefix = Tensor.ofInts(ctx, Arrays.copyOf(batch[0], t), 1, t)) {
                    float[] z = model.logits(prefix);
                    assertEquals(256, z.length);
                    sum -= LogSoftmax.of(z, batch[1][t - 1]);
                }
            }
            // Every op is per row or causal, so each prefix computes its last row as the whole sequence does;
            // only the summation order of the mean differs (seen: 1e-7).
            assertEquals(ce, sum / s, 1e-4, "mean CE from prefix logits vs the forward");
        }
    }

    @Test
    void badInputGivesTypedExceptionsWithTheNativeMessage() {
        int[] bad = new int[B * S];
        bad[5] = 256;
        try (Tensor outOfRange = Tensor.ofInts(ctx, bad, B, S);
             Tensor floats = Tensor.create(ctx, DType.F32, B, S);
             Tensor shorter = Tensor.create(ctx, DType.I32, B, S - 1)) {
            InvalidArgumentException e = assertThrows(InvalidArgumentException.class,
                    () -> model.forward(outOfRange, targets, ModelForwardOptions.evaluation()));
            assertFalse(e.nativeMessage().isEmpty(), e.getMessage());
            assertTrue(e.getMessage().contains("hspmn_model_forward"), e.getMessage());
            assertThrows(InvalidArgumentException.class, () -> model.forward(tokens, outOfRange, ModelForwardOptions.evaluation()));
            InvalidArgumentException d = assertThrows(InvalidArgumentException.class,
                    () -> model.forward(floats, targets, ModelForwardOptions.evaluation()));
            assertEquals(Status.DTYPE, d.status());
            InvalidArgumentException sh = assertThrows(InvalidArgumentException.class,
                    () -> model.forward(tokens, shorter, ModelForwardOptions.evaluation()));
            assertEquals(Status.SHAPE, sh.status());
        }
        InvalidArgumentException nf = assertThrows(InvalidArgumentException.class, () -> model.param("blocks.9.attn.q"));
        assertEquals(Status.NOT_FOUND, nf.status());
        assertTrue(nf.getMessage().contains("blocks.9.attn.q"), nf.getMessage());
        assertThrows(InvalidArgumentException.class, () -> model.setParam("norm", new float[3]));
        assertThrows(HspmnStateException.class, () -> model.backward(1f, false), "backward before a training forward");
        model.forward(tokens, targets, ModelForwardOptions.evaluation());
        assertThrows(HspmnStateException.class, () -> model.backward(1f, false), "backward after an evaluation forward");
        InvalidArgumentException cfg = assertThrows(InvalidArgumentException.class,
                () -> LanguageModel.create(ctx, new ModelConfig(1, 2, BLOCK), 1));
        assertTrue(cfg.getMessage().contains("vocab_size"), cfg.getMessage());
        assertThrows(InvalidArgumentException.class, () -> AdamwOptions.of(0, 1e-3f));
        // the model is still usable after every failure
        assertTrue(Float.isFinite(model.forward(tokens, targets, ModelForwardOptions.evaluation()).loss()));
        model.close();
        assertThrows(IllegalStateException.class, () -> model.forward(tokens, targets, ModelForwardOptions.evaluation()));
        model.close(); // idempotent
    }

    @Test
    void closingTheContextClosesTheModelAndFreesEverything() {
        ctx.close();
        assertTrue(model.isClosed());
        AllocStats start = Hspmn.allocStats();
        List<Long> after = new ArrayList<>();
        for (int i = 0; i < 20; i++) {
            try (Context c = Context.create(ContextOptions.defaults().withBackend(Backend.CPU).withNumThreads(1))) {
                LanguageModel m = LanguageModel.create(c, CONFIG, i);
                int[][] batch = randomBatch(1, 8, i);
                Tensor tok = Tensor.ofInts(c, batch[0], 1, 8);
                Tensor tgt = Tensor.ofInts(c, batch[1], 1, 8);
                m.forward(tok, tgt, ModelForwardOptions.training(1, i, -1f));
                m.backward(1f, false);
                m.adamwStep(AdamwOptions.of(1, 1e-3f));
                m.logits(tok);
                if (i == 0) {
                    assertNotEquals(start.liveBytes(), Hspmn.allocStats().liveBytes());
                }
            }
            after.add(Hspmn.allocStats().liveBytes());
        }
        for (long live : after) {
            assertEquals(start.liveBytes(), live, "live bytes after closing: " + after);
        }
        assertEquals(start.liveTensors(), Hspmn.allocStats().liveTensors());
    }

    @Test
    void modelConfigJsonIsTheReferences() {
        String json = CONFIG.toJson();
        assertTrue(json.startsWith("{\"vocab_size\":256,\"num_layers\":2,\"block\":{\"dim\":32,"), json);
        assertEquals(CONFIG, ModelConfig.fromJson(json));
        assertEquals(CONFIG, ModelConfig.fromJson(json.replace("{\"vocab_size\"", "{\"training\":{\"lr\":1},\"vocab_size\"")));
        InvalidArgumentException unknown = assertThrows(InvalidArgumentException.class,
                () -> ModelConfig.fromJson(json.replace("\"dim\":32", "\"dim\":32,\"width\":3")));
        assertTrue(unknown.getMessage().contains("width"), unknown.getMessage());
        InvalidArgumentException missing = assertThrows(InvalidArgumentException.class,
                () -> ModelConfig.fromJson("{\"vocab_size\":256,\"block\":{}}"));
        assertTrue(missing.getMessage().contains("num_layers"), missing.getMessage());
        assertThrows(InvalidArgumentException.class, () -> new ModelConfig(256, 0, BLOCK).validate());
        assertThrows(InvalidArgumentException.class, () -> new ModelConfig(70000, 1, BLOCK).validate());
        assertThrows(InvalidArgumentException.class, () -> ModelConfig.fromJson("[1]"));
    }

    private static boolean allZero(float[] v) {
        for (float x : v) {
            if (x != 0) {
                return false;
            }
        }
        return true;
    }
}
