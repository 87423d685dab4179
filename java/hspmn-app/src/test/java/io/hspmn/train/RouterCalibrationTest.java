package io.hspmn.train;

import io.hspmn.Backend;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * --router-calibration F takes the last F of the training split out of training for the router bias
 * control; too small a slice for one window is refused with the sizes; without bias control nothing is
 * held out.
 */
class RouterCalibrationTest {
    @TempDir
    Path dir;

    TrainOptions.Builder options(String out) {
        return TrainOptions.builder().data(TrainingFixtures.CORPUS).out(dir.resolve(out)).dim(32).layers(2).heads(4)
                .kvHeads(2).mlpRatio(2).seqLen(64).batch(4).steps(8).evalEvery(0).saveEvery(0).seed(1)
                .backend(Backend.CPU).threads(2);
    }

    @Test
    void theSliceLeavesTheTrainingSplit() throws Exception {
        long whole;
        try (Trainer t = Trainer.open(options("plain").build(), null)) {
            whole = t.trainSplit().size();
        }
        try (Trainer t = Trainer.open(options("calibrated").routerCalibration(0.1).build(), null)) {
            assertEquals(whole - (long) Math.floor(whole * 0.1), t.trainSplit().size());
            assertEquals(8, t.run().step());
        }
        // top-k routing has no bias control: nothing is held out
        try (Trainer t = Trainer.open(options("topk").routing(io.hspmn.Routing.TOPK).routerCalibration(0.1).build(), null)) {
            assertEquals(whole, t.trainSplit().size());
        }
    }

    @Test
    void aSliceSmallerThanAWindowIsRefused() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Trainer.open(options("tiny").routerCalibration(1e-5).build(), null).close());
        assertTrue(e.getMessage().contains("--router-calibration") && e.getMessage().contains("one window"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> options("bad").routerCalibration(0.6).build().validate());
    }
}
