package io.hspmn;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Residual dropout through the language-model API on the CPU backend (native/README.md "Residual
 * dropout"): the mask is applied in training (the loss and gradients move), it is a function of
 * (seed, step) alone (the same call twice gives the same bits, another step other bits), and an
 * evaluation forward ignores it. Parity with the float64 reference is native/reference/check_dropout.py
 * and check_model.py's dropout case.
 */
class DropoutTest extends ModelFixture {
    static final int B = 2;
    static final int S = 33;
    static final ModelConfig CONFIG = ModelConfig.byteLevel(2, HspmnConfig.builder().dim(40).numHeads(4).numKvHeads(2)
            .mlpRatio(2).routing(Routing.THRESHOLD).build());

    @BeforeEach
    void setUp() {
        open(CONFIG, 3, B, S, 17);
    }

    private float[] trainLoss(long step, float dropout) {
        LossResult r = model.forward(tokens, targets, ModelForwardOptions.training(9, step, -1f, dropout));
        model.backward(1f, false);
        return new float[] {r.loss(), r.crossEntropy()};
    }

    @Test
    void dropoutChangesTrainingAndIsReproducible() {
        float[] plain = trainLoss(4, 0f);
        float[] plainGrad = model.grad("blocks.0.reflex.down");
        float[] dropped = trainLoss(4, 0.3f);
        float[] droppedGrad = model.grad("blocks.0.reflex.down");
        assertTrue(Math.abs(dropped[1] - plain[1]) > 1e-3 * Math.abs(plain[1]),
                "dropout 0.3 must move the loss: " + plain[1] + " vs " + dropped[1]);
        int moved = 0;
        for (int i = 0; i < plainGrad.length; i++) {
            if (droppedGrad[i] != plainGrad[i]) {
                moved++;
            }
        }
        assertTrue(moved > plainGrad.length / 2, "the gradients move too: " + moved + " of " + plainGrad.length);

        float[] again = trainLoss(4, 0.3f);
        assertArrayEquals(dropped, again, "the same (seed, step) draws the same masks");
        assertArrayEquals(droppedGrad, model.grad("blocks.0.reflex.down"));
        float[] other = trainLoss(5, 0.3f);
        assertNotEquals(dropped[1], other[1], "another step draws other masks (and noise)");

        float[] off = trainLoss(4, 0f);
        assertArrayEquals(plain, off, "p = 0 is the forward without dropout");
        assertArrayEquals(plainGrad, model.grad("blocks.0.reflex.down"));
    }

    @Test
    void evaluationIgnoresDropout() {
        LossResult eval = model.forward(tokens, targets, ModelForwardOptions.evaluation());
        LossResult evalWith = model.forward(tokens, targets, ModelForwardOptions.evaluation().withDropout(0.5f));
        assertEquals(Float.floatToIntBits(eval.loss()), Float.floatToIntBits(evalWith.loss()));
        assertArrayEquals(eval.routedFraction(), evalWith.routedFraction());
        float[] logits = model.logits(tokens);
        trainLoss(1, 0.5f);  // a training step with dropout leaves inference as it was
        assertArrayEquals(logits, model.logits(tokens));
    }

    @Test
    void probabilityOutsideZeroToOneIsRefused() {
        for (float p : new float[] {1f, -0.01f, Float.NaN, 2f}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> ModelForwardOptions.training(1, 0, -1f, p), Float.toString(p));
            assertTrue(e.getMessage().contains("[0, 1)"), e.getMessage());
            assertThrows(IllegalArgumentException.class, () -> ForwardOptions.training(1, 0, 0).withDropout(p));
        }
    }

    @Test
    void negativeRowOffsetIsRefused() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> ModelForwardOptions.training(1, 0, -1f, 0.1f).withRowOffset(-1));
        assertTrue(e.getMessage().contains("rowOffset (-1)"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> ForwardOptions.training(1, 0, 0).withRowOffset(-2));
        assertEquals(5L, ModelForwardOptions.training(1, 0, -1f).withRowOffset(5).withDropout(0.2f).rowOffset());
    }
}
