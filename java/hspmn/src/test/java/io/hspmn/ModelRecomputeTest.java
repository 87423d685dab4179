package io.hspmn;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.util.LinkedHashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * ModelForwardOptions.recompute through the language-model API on the CPU backend: a training forward
 * with it holds less (the layers' inputs instead of their activations), and the backward that re-runs
 * the layers' forwards gives the plain run's loss and gradients bit for bit (noise and dropout on).
 * native/tests/test_model.cpp and reference/check_model.py check the same natively, also on CUDA.
 */
class ModelRecomputeTest extends ModelFixture {
    static final ModelConfig CONFIG = ModelConfig.byteLevel(3, HspmnConfig.builder().dim(40).numHeads(4).numKvHeads(2)
            .mlpRatio(2).routing(Routing.THRESHOLD).build());

    @BeforeEach
    void setUp() {
        open(CONFIG, 5, 2, 33, 19);
    }

    @Test
    void recomputeHoldsLessAndGivesTheSameGradients() {
        ModelForwardOptions plain = ModelForwardOptions.training(7, 3, -1f, 0.2f);
        long start = Hspmn.allocStats().liveBytes();
        LossResult a = model.forward(tokens, targets, plain);
        long heldPlain = Hspmn.allocStats().liveBytes() - start;
        model.backward(1f, false);
        Map<String, float[]> gradsPlain = new LinkedHashMap<>();
        for (String name : model.paramNames()) {
            gradsPlain.put(name, model.grad(name));
        }

        LossResult b = model.forward(tokens, targets, plain.withRecompute(true));
        long heldRecompute = Hspmn.allocStats().liveBytes() - start;
        model.backward(1f, false);
        assertTrue(heldRecompute < heldPlain / 2, "held after the forward: " + heldRecompute + " with recompute, "
                + heldPlain + " without");
        assertEquals(Float.floatToIntBits(a.loss()), Float.floatToIntBits(b.loss()), "loss");
        for (Map.Entry<String, float[]> e : gradsPlain.entrySet()) {
            assertArrayEquals(e.getValue(), model.grad(e.getKey()), "grad " + e.getKey());
        }
    }
}
