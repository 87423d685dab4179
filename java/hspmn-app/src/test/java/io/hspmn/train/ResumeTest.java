package io.hspmn.train;

import io.hspmn.Backend;
import io.hspmn.checkpoint.Checkpoint;
import io.hspmn.io.TensorData;
import io.hspmn.metrics.MetricsWriter;
import io.hspmn.metrics.StepMetrics;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * N steps straight equal N/2 steps, a checkpoint, and N/2 more in a new JVM that resumes from it, bit
 * for bit: master weights, AdamW moments, sampler position and the per-step log (loss, ce, aux, routed
 * fraction, lr, grad norm, and the validation results on the steps that validated). CPU backend, with
 * gradient accumulation so the noise step s * A + a is exercised, and validation inside both halves so
 * its use of the model and the shared batch buffers is shown not to disturb training. Run without and
 * with residual dropout (--dropout 0.2: the masks are keyed like the noise, so they too must continue).
 */
class ResumeTest {
    static final long STEPS = 12;

    @TempDir
    Path dir;

    static TrainOptions.Builder options(Path out) {
        return TrainOptions.builder().data(TrainingFixtures.CORPUS).out(out).dim(32).layers(2).heads(4).kvHeads(2)
                .mlpRatio(2).seqLen(64).batch(4).gradAccum(2).steps(STEPS).lr(3e-3f).warmup(4).evalEvery(4)
                .evalBatches(2).saveEvery(0).seed(7).backend(Backend.CPU).threads(2);
    }

    @ParameterizedTest(name = "dropout {0}")
    @ValueSource(floats = {0f, 0.2f})
    void nStepsStraightEqualHalfSaveAndResumeInANewProcess(float dropout) throws Exception {
        Path straight = dir.resolve("straight");
        Path split = dir.resolve("split");
        try (Trainer t = Trainer.open(options(straight).dropout(dropout).build(), null)) {
            assertEquals(STEPS, t.run().step());
        }
        try (Trainer t = Trainer.open(options(split).dropout(dropout).stopAfter(STEPS / 2).build(), null)) {
            Trainer.Result r = t.run();
            assertEquals(STEPS / 2, r.step());
        }
        Checkpoint half = Checkpoint.load(split.resolve(Trainer.CHECKPOINT));
        assertEquals(STEPS / 2, half.step());
        assertEquals(STEPS / 2 * 2 * 4, half.dataPosition(), "windows drawn: steps x grad-accum x batch");

        // The second half in a fresh JVM, through the command line: --out and --resume, and the backend of the
        // first half (the default auto would pick CUDA on a GPU machine, whose arithmetic differs).
        TrainingFixtures.Run second = TrainingFixtures.cli("train", "--out", split.toString(), "--resume", "--backend",
                "cpu", "--threads", "2");
        assertEquals(0, second.exit(), second.output());
        assertTrue(second.output().contains("resuming at step " + STEPS / 2), second.output());

        Checkpoint a = Checkpoint.load(straight.resolve(Trainer.CHECKPOINT));
        Checkpoint b = Checkpoint.load(split.resolve(Trainer.CHECKPOINT));
        assertEquals(STEPS, a.step());
        assertEquals(dropout, TrainCheckpoint.load(split.resolve(Trainer.CHECKPOINT)).options().dropout(),
                "the resumed run read --dropout from the checkpoint");
        assertEquals(a.configJson(), b.configJson());
        assertEquals(a.step(), b.step());
        assertEquals(a.dataPosition(), b.dataPosition());
        assertArrayEquals(a.rngState(), b.rngState(), "sampler position");
        assertSameTensors("weight", a.weights(), b.weights());
        assertSameTensors("optim.m", a.optimM(), b.optimM());
        assertSameTensors("optim.v", a.optimV(), b.optimV());
        assertTrue(a.contentEquals(b));
        // and the halfway checkpoint is really behind: training moved the weights after it
        assertTrue(!half.weights().get("embedding").contentEquals(a.weights().get("embedding")));

        List<StepMetrics> la = MetricsWriter.read(straight.resolve(Trainer.METRICS));
        List<StepMetrics> lb = MetricsWriter.read(split.resolve(Trainer.METRICS));
        assertEquals(STEPS, la.size());
        assertEquals(stepsOf(la), stepsOf(lb), "one line per step, no step twice");
        int validated = 0;
        for (int i = 0; i < la.size(); i++) {
            StepMetrics x = la.get(i);
            StepMetrics y = lb.get(i);
            String at = "step " + x.step();
            assertEquals(Double.doubleToLongBits(x.loss()), Double.doubleToLongBits(y.loss()), at + " loss");
            assertEquals(Double.doubleToLongBits(x.aux()), Double.doubleToLongBits(y.aux()), at + " aux");
            assertEquals(Double.doubleToLongBits(x.bitsPerByte()), Double.doubleToLongBits(y.bitsPerByte()), at + " bpb");
            assertArrayEquals(x.routedFraction(), y.routedFraction(), at + " routed fraction");
            assertEquals(Double.doubleToLongBits(x.lr()), Double.doubleToLongBits(y.lr()), at + " lr");
            assertEquals(Double.doubleToLongBits(x.gradNorm()), Double.doubleToLongBits(y.gradNorm()), at + " grad norm");
            assertEquals(x.valLoss(), y.valLoss(), at + " validation loss");
            assertEquals(x.valBpb(), y.valBpb(), at + " validation bpb");
            assertArrayEquals(x.valRoutedFraction(), y.valRoutedFraction(), at + " validation routed fraction");
            if (x.hasValidation()) {
                validated++;
                assertNotNull(x.valRoutedFraction());
            }
        }
        assertEquals(STEPS / 4, validated, "validation at every 4th step");
        // the loss moved, so equal logs are not two copies of a constant
        assertTrue(la.getLast().loss() < la.getFirst().loss() - 0.5, la.getFirst().loss() + " -> " + la.getLast().loss());
        System.out.printf("resume test (dropout %s): %d steps, final loss %.6f, grad norm %.6f, bitwise equal%n",
                dropout, STEPS, la.getLast().loss(), la.getLast().gradNorm());
    }

    @Test
    void resumeRefusesChangedRunOptionsAndOtherData() throws Exception {
        Path out = dir.resolve("run");
        try (Trainer t = Trainer.open(options(out).stopAfter(2).build(), null)) {
            t.run();
        }
        IllegalArgumentException lr = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> Trainer.open(options(out).lr(1e-3f).resume(true).build(), null));
        assertTrue(lr.getMessage().contains("--lr 0.001") && lr.getMessage().contains("0.003"), lr.getMessage());
        IllegalArgumentException fresh = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> Trainer.open(options(out).build(), null));
        assertTrue(fresh.getMessage().contains("--resume"), fresh.getMessage());
        Path other = dir.resolve("other.txt");
        java.nio.file.Files.writeString(other, "a different corpus ".repeat(2000));
        IllegalArgumentException data = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> Trainer.open(options(out).data(other).resume(true).build(), null));
        assertTrue(data.getMessage().contains("not the corpus"), data.getMessage());
        // the options the run may change: a resume with more steps and other evaluation settings trains on
        try (Trainer t = Trainer.open(options(out).steps(STEPS + 2).evalEvery(0).saveEvery(1).resume(true).stopAfter(3).build(), null)) {
            assertEquals(3, t.run().step());
        }
    }

    private static List<Long> stepsOf(List<StepMetrics> l) {
        List<Long> s = new ArrayList<>();
        for (StepMetrics m : l) {
            s.add(m.step());
        }
        return s;
    }

    private static void assertSameTensors(String what, Map<String, TensorData> a, Map<String, TensorData> b) {
        assertEquals(List.copyOf(a.keySet()), List.copyOf(b.keySet()), what + " names");
        for (String k : a.keySet()) {
            assertEquals(io.hspmn.io.SafeTensors.DType.F32, a.get(k).dtype(), what + " " + k);
            assertTrue(a.get(k).contentEquals(b.get(k)), what + " " + k + " differs");
        }
    }
}
