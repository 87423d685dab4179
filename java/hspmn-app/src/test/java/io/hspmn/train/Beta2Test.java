package io.hspmn.train;

import io.hspmn.Backend;
import io.hspmn.Moment;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** --beta2 reaches AdamW, is stored in the checkpoint, and a resumed run keeps it. */
class Beta2Test {
    @TempDir
    Path dir;

    TrainOptions.Builder oneStep(String name, float beta2) {
        // no clipping, so the first update's second moment is exactly (1 - beta2) g^2 of the held gradient
        return TrainOptions.builder().data(TrainingFixtures.CORPUS).out(dir.resolve(name)).dim(32).layers(1).heads(2)
                .kvHeads(1).seqLen(32).batch(2).steps(1).warmup(0).evalEvery(0).evalBatches(1).clip(0f).beta2(beta2)
                .backend(Backend.CPU).threads(2);
    }

    @Test
    void theFirstUpdatesSecondMomentIsOneMinusBeta2TimesTheSquaredGradient() throws Exception {
        for (float beta2 : new float[] {0.95f, 0.99f}) {
            TrainOptions o = oneStep("b" + beta2, beta2).build();
            try (Trainer t = Trainer.open(o, null)) {
                t.run();
                String p = "blocks.0.attn.q";
                float[] g = t.model().grad(p);
                float[] v = t.model().moment(p, Moment.V);
                int checked = 0;
                for (int i = 0; i < g.length; i++) {
                    double want = (1 - (double) beta2) * g[i] * g[i];
                    if (want > 1e-30) {
                        assertEquals(want, v[i], 1e-5 * want, "beta2 " + beta2 + ": v[" + i + "]");
                        checked++;
                    }
                }
                assertTrue(checked > g.length / 2, "most gradients are non-zero");
            }
            TrainCheckpoint.State s = TrainCheckpoint.load(o.out().resolve(Trainer.CHECKPOINT));
            assertEquals(beta2, s.options().beta2(), "stored in the checkpoint");
        }
        TrainOptions stored = TrainCheckpoint.load(dir.resolve("b0.99").resolve(Trainer.CHECKPOINT)).options();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TrainOptions.forResume(stored, Map.of("beta2", "0.95")));
        assertTrue(e.getMessage().contains("--beta2 0.95 (the checkpoint has 0.99)"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> oneStep("bad", 1f).build().validate());
    }
}
