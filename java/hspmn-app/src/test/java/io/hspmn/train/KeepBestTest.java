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
 * after it; without the flag there is no such file. A corpus small enough to memorise makes validation
 * worse after its best point, so the two checkpoints differ (asserted, so the test keeps its power).
 */
class KeepBestTest {
    @TempDir
    Path dir;

    /** 1,500 training bytes of the corpus and 1,500 held out: a model overfits them within these steps. */
    TrainOptions.Builder options(Path out) throws java.io.IOException {
        Path small = dir.resolve("small.txt");
        if (!Files.exists(small)) {
            Files.write(small, java.util.Arrays.copyOf(Files.readAllBytes(TrainingFixtures.CORPUS), 3000));
        }
        return TrainOptions.builder().data(small).valFraction(0.5).out(out).dim(64).layers(2).heads(4).kvHeads(2)
                .mlpRatio(2).seqLen(32).batch(8).steps(80).lr(1e-2f).warmup(4).evalEvery(4).evalBatches(2)
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
        assertTrue(best.step() < last.step(), "this run's validation must get worse after its best (else the "
                + "test shows nothing about keeping an earlier checkpoint): " + validated);
        assertFalse(kept.contentEquals(last), "an earlier best is not the final weights");
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
