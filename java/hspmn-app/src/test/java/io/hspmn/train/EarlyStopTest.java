package io.hspmn.train;

import io.hspmn.checkpoint.Checkpoint;
import io.hspmn.metrics.StepMetrics;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * --early-stop N ends a run at the first validation that is N validations past the run's best, with a
 * checkpoint at that step; a run interrupted and resumed stops at the same step. KeepBestTest's corpus is
 * small enough to memorise, so validation turns worse well before --steps (asserted).
 */
class EarlyStopTest {
    @TempDir
    Path dir;

    private List<StepMetrics> validations(Path out) throws Exception {
        return Files.readAllLines(out.resolve(Trainer.METRICS)).stream().map(StepMetrics::fromJson)
                .filter(StepMetrics::hasValidation).toList();
    }

    @Test
    void stopsPatienceValidationsAfterTheBest() throws Exception {
        KeepBestTest fixture = new KeepBestTest();
        fixture.dir = dir;
        Path out = dir.resolve("run");
        Trainer.Result r;
        try (Trainer t = Trainer.open(fixture.options(out).earlyStop(3).build(), null)) {
            r = t.run();
        }
        List<StepMetrics> v = validations(out);
        StepMetrics best = v.stream().min((a, b) -> Double.compare(a.valBpb(), b.valBpb())).orElseThrow();
        assertTrue(r.stoppedEarly(), "this corpus overfits within 80 steps, so the run must stop early: " + v);
        assertEquals(best.step(), r.stoppedEarlyBest());
        assertEquals(best.step() + 3 * 4, r.step(), "three validations (every 4 steps) after the best: " + v);
        assertTrue(r.step() < 80);
        assertEquals(r.step(), v.getLast().step(), "the last line is the stopping validation");
        for (StepMetrics m : v) {
            if (m.step() > best.step()) {
                assertTrue(m.valBpb() >= best.valBpb(), "no improvement after the best: " + v);
            }
        }
        assertEquals(r.step(), Checkpoint.load(out.resolve(Trainer.CHECKPOINT)).step(), "checkpoint at the stop");
        assertEquals(best.valBpb(), r.bestValidation(), 0.0);
    }

    @Test
    void resumedRunStopsAtTheSameStep() throws Exception {
        KeepBestTest fixture = new KeepBestTest();
        fixture.dir = dir;
        Path whole = dir.resolve("whole");
        long stopped;
        try (Trainer t = Trainer.open(fixture.options(whole).earlyStop(3).build(), null)) {
            stopped = t.run().step();
        }
        // interrupted one validation after the best was reached in the uninterrupted run, then resumed
        long bestStep = stopped - 3 * 4;
        Path parts = dir.resolve("parts");
        try (Trainer t = Trainer.open(fixture.options(parts).earlyStop(3).stopAfter(bestStep + 4).build(), null)) {
            assertFalse(t.run().stoppedEarly());
        }
        try (Trainer t = Trainer.open(fixture.options(parts).earlyStop(3).resume(true).build(), null)) {
            Trainer.Result r = t.run();
            assertTrue(r.stoppedEarly());
            assertEquals(stopped, r.step(), "the resumed run counts from the best it logged before the break");
            assertEquals(bestStep, r.stoppedEarlyBest());
        }
    }

    @Test
    void needsValidations() {
        KeepBestTest fixture = new KeepBestTest();
        fixture.dir = dir;
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> fixture.options(dir.resolve("x")).earlyStop(2).evalEvery(0).build().validate());
        assertTrue(e.getMessage().contains("--eval-every"), e.getMessage());
    }
}
