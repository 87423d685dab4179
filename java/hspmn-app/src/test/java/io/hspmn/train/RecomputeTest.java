package io.hspmn.train;

import io.hspmn.checkpoint.Checkpoint;
import io.hspmn.metrics.MetricsWriter;
import io.hspmn.metrics.StepMetrics;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * --recompute re-runs each layer's forward right before its backward with the forward's own noise and
 * dropout keys: a run with it equals the run without bit for bit (checkpoint and every logged loss), also
 * when a resumed run turns it off (it is an option of the invocation, not of the run). That the option
 * takes effect (a forward holds less) is io.hspmn.ModelRecomputeTest's and test_model.cpp's to show.
 */
class RecomputeTest {
    @TempDir
    Path dir;

    @Test
    void recomputedRunEqualsThePlainRunBitwise() throws Exception {
        Path plain = dir.resolve("plain");
        Path recomputed = dir.resolve("recomputed");
        Path switched = dir.resolve("switched");
        try (Trainer t = Trainer.open(ResumeTest.options(plain).dropout(0.2f).build(), null)) {
            t.run();
        }
        try (Trainer t = Trainer.open(ResumeTest.options(recomputed).dropout(0.2f).recompute(true).build(), null)) {
            t.run();
        }
        try (Trainer t = Trainer.open(ResumeTest.options(switched).dropout(0.2f).recompute(true)
                .stopAfter(ResumeTest.STEPS / 2).build(), null)) {
            t.run();
        }
        try (Trainer t = Trainer.open(ResumeTest.options(switched).dropout(0.2f).resume(true).build(), null)) {
            assertEquals(ResumeTest.STEPS, t.run().step());
        }
        Checkpoint a = Checkpoint.load(plain.resolve(Trainer.CHECKPOINT));
        List<StepMetrics> la = MetricsWriter.read(plain.resolve(Trainer.METRICS));
        assertTrue(la.getLast().loss() < la.getFirst().loss() - 0.5, "the run trained: " + la.getFirst().loss()
                + " -> " + la.getLast().loss());
        for (Path other : List.of(recomputed, switched)) {
            assertTrue(a.contentEquals(Checkpoint.load(other.resolve(Trainer.CHECKPOINT))), other + ": checkpoint differs");
            List<StepMetrics> lb = MetricsWriter.read(other.resolve(Trainer.METRICS));
            assertEquals(la.size(), lb.size());
            for (int i = 0; i < la.size(); i++) {
                assertEquals(Double.doubleToLongBits(la.get(i).loss()), Double.doubleToLongBits(lb.get(i).loss()),
                        other + " step " + la.get(i).step() + " loss");
                assertEquals(Double.doubleToLongBits(la.get(i).gradNorm()), Double.doubleToLongBits(lb.get(i).gradNorm()),
                        other + " step " + la.get(i).step() + " grad norm");
            }
        }
    }

    @Test
    void evaluationCannotRecompute() {
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> io.hspmn.ModelForwardOptions.evaluation().withRecompute(true));
        assertTrue(e.getMessage().contains("recompute needs a training forward"), e.getMessage());
    }
}
