package io.hspmn.train;

import io.hspmn.Backend;
import io.hspmn.checkpoint.Checkpoint;
import io.hspmn.metrics.StepMetrics;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * --keep-best writes best.safetensors at the validation with the lowest bits/byte of the run, whatever comes
 * after it; without the flag there is no such file. A learning rate high enough to make validation worse
 * after its best point makes the two checkpoints differ.
 */
class KeepBestTest {
    @TempDir
    Path dir;

    static TrainOptions.Builder options(Path out) {
        return TrainOptions.builder().data(TrainingFixtures.CORPUS).out(out).dim(32).layers(2).heads(4).kvHeads(2)
                .mlpRatio(2).seqLen(32).batch(4).steps(24).lr(3e-2f).warmup(2).evalEvery(2).evalBatches(1)
                .saveEvery(0).seed(3).backend(Backend.CPU).threads(2);
    }

    @Test
    void bestCheckpointIsTheLowestValidation() throws Exception {
        Path out = dir.resolve("run");
        try (Trainer t = Trainer.open(options(out).keepBest(true).build(), null)) {
            t.run();
        }
        List<StepMetrics> validated = Files.readAllLines(out.resolve(Trainer.METRICS)).stream().map(StepMetrics::fromJson)
                .filter(StepMetrics::hasValidation).toList();
        StepMetrics best = validated.stream().min((a, b) -> Double.compare(a.valBpb(), b.valBpb())).orElseThrow();
        Checkpoint kept = Checkpoint.load(out.resolve(Trainer.BEST));
        assertEquals(best.step(), kept.step(), "best.safetensors holds the step of the lowest val_bpb " + validated);
        Checkpoint last = Checkpoint.load(out.resolve(Trainer.CHECKPOINT));
        if (best.step() != last.step()) {
            assertFalse(kept.contentEquals(last), "an earlier best is not the final weights");
        }
        assertTrue(validated.size() >= 10, "validated every 2 steps: " + validated.size());
    }

    @Test
    void withoutTheFlagThereIsNoBestFile() throws Exception {
        Path out = dir.resolve("plain");
        try (Trainer t = Trainer.open(options(out).steps(4).build(), null)) {
            t.run();
        }
        assertTrue(Files.isRegularFile(out.resolve(Trainer.CHECKPOINT)));
        assertFalse(Files.exists(out.resolve(Trainer.BEST)));
    }
}
