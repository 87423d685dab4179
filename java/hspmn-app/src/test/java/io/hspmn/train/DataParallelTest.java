package io.hspmn.train;

import io.hspmn.Backend;
import io.hspmn.CommunicatorException;
import io.hspmn.LanguageModel;
import io.hspmn.checkpoint.Checkpoint;
import io.hspmn.io.TensorData;
import io.hspmn.metrics.MetricsWriter;
import io.hspmn.metrics.StepMetrics;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Data-parallel training on CPU ranks (threads of this JVM joined by the LOCAL communicator): N ranks
 * of batch B train what one rank of batch N x B trains, a checkpoint resumes on another number of
 * ranks, ZeRO-1 changes nothing, and a failing rank stops every rank.
 *
 * <p>What "the same" allows: the ranks' gradients are summed over ranks after each rank summed its own
 * rows, where one rank sums all rows at once, so float32 addition order differs; native/README.md
 * "Data parallelism" bounds the gradients at 1e-5 relative (measured 1e-7). The comparison runs the
 * project's f32 bound (native/reference/tolerances.json, Parity) on the weights, moments and logged
 * numbers. The routing noise and the dropout masks are keyed by a row's index in the global batch (each
 * rank passes its first row as the forward's row offset), so the comparisons run with noise, and one with
 * dropout. One term is not linear in the split and is off where runs of different splits are compared:
 * the aux loss's sparsity term (a squared mean over the rank's batch, as DDP computes it); runs of the
 * same split keep it on.
 */
class DataParallelTest {
    /** tolerances.json "f32": a float32 result whose only difference is float32 rounding. */
    static final double F32 = 2e-5;
    static final long STEPS = 6;

    @TempDir
    Path dir;

    static TrainOptions.Builder options(Path out, int gpus, int batch) {
        TrainOptions.Builder b = TrainOptions.builder().data(TrainingFixtures.CORPUS).out(out).dim(32).layers(2).heads(4)
                .kvHeads(2).mlpRatio(2).seqLen(32).batch(batch).gradAccum(2).steps(STEPS).lr(3e-3f).warmup(2).evalEvery(3)
                .evalBatches(1).saveEvery(0).seed(7).backend(Backend.CPU).threads(1);
        b.parallel().gpus(gpus);
        return b;
    }

    /** Without the split-dependent term (the class comment says why). */
    static TrainOptions.Builder linear(Path out, int gpus, int batch) {
        return options(out, gpus, batch).routerSparsityCoef(0f);
    }

    static Trainer.Result train(TrainOptions o) throws Exception {
        try (Trainer t = Trainer.open(o, null)) {
            return t.run();
        }
    }

    @Test
    void twoRanksOfBatchBTrainWhatOneRankOfBatch2BTrains() throws Exception {
        twoRanksAgainstOne(0f);
    }

    @Test
    void withDropoutTwoRanksOfBatchBTrainWhatOneRankOfBatch2BTrains() throws Exception {
        twoRanksAgainstOne(0.1f);
    }

    /** 2 ranks x 2 against 1 rank x 4, with routing noise and residual dropout p. */
    private void twoRanksAgainstOne(float dropout) throws Exception {
        Path two = dir.resolve("two");
        Path one = dir.resolve("one");
        train(linear(two, 2, 2).dropout(dropout).build());
        train(linear(one, 1, 4).dropout(dropout).build());
        Checkpoint a = Checkpoint.load(two.resolve(Trainer.CHECKPOINT));
        Checkpoint b = Checkpoint.load(one.resolve(Trainer.CHECKPOINT));
        assertEquals(b.step(), a.step());
        assertEquals(STEPS * 2 * 4, a.dataPosition(), "windows drawn: steps x grad-accum x global batch");
        assertEquals(b.dataPosition(), a.dataPosition());
        assertArrayEquals(b.rngState(), a.rngState(), "the same sampler position");
        double worst = Math.max(maxRelative("weight", a.weights(), b.weights()),
                Math.max(maxRelative("optim.m", a.optimM(), b.optimM()), maxRelative("optim.v", a.optimV(), b.optimV())));
        List<StepMetrics> la = MetricsWriter.read(two.resolve(Trainer.METRICS));
        List<StepMetrics> lb = MetricsWriter.read(one.resolve(Trainer.METRICS));
        assertEquals(STEPS, la.size());
        for (int i = 0; i < la.size(); i++) {
            StepMetrics x = la.get(i);
            StepMetrics y = lb.get(i);
            String at = "step " + x.step();
            close(at + " loss", y.loss(), x.loss());
            close(at + " bits/byte", y.bitsPerByte(), x.bitsPerByte());
            close(at + " grad norm", y.gradNorm(), x.gradNorm());
            assertEquals(y.lr(), x.lr(), at + " lr");
            for (int l = 0; l < x.routedFraction().length; l++) {
                close(at + " routed fraction " + l, y.routedFraction()[l], x.routedFraction()[l]);
            }
            assertEquals(y.hasValidation(), x.hasValidation(), at);
            if (x.hasValidation()) {
                close(at + " validation bits/byte", y.valBpb(), x.valBpb());
            }
        }
        // the loss moved, so equal runs are not two copies of a constant
        assertTrue(la.getLast().loss() < la.getFirst().loss() - 0.3, la.getFirst().loss() + " -> " + la.getLast().loss());
        System.out.printf("data parallel: 2 ranks x 2 vs 1 rank x 4, noise on, dropout %s, %d steps: worst tensor "
                + "relative error %.2e (bound %.0e)%n", dropout, STEPS, worst, F32);
    }

    @Test
    void theReplicasStayIdenticalWithNoiseAndEveryTerm() throws Exception {
        try (Trainer t = Trainer.open(options(dir.resolve("noisy"), 2, 2).stopAfter(3).build(), null)) {
            t.run();
            List<LanguageModel> r = t.replicas();
            assertEquals(2, r.size());
            for (String name : r.get(0).paramNames()) {
                assertArrayEquals(r.get(0).param(name), r.get(1).param(name), name + ": the ranks' weights differ");
            }
        }
    }

    @Test
    void aTwoRankCheckpointResumesOnOneRankAndOnThree() throws Exception {
        Path straight = dir.resolve("straight");
        train(linear(straight, 2, 3).build());  // global batch 6
        Path half = dir.resolve("half");
        train(linear(half, 2, 3).stopAfter(STEPS / 2).build());
        Checkpoint want = Checkpoint.load(straight.resolve(Trainer.CHECKPOINT));
        for (int gpus : new int[] {1, 3}) {
            Path out = dir.resolve("on" + gpus);
            copyRun(half, out);
            TrainOptions stored = TrainCheckpoint.load(out.resolve(Trainer.CHECKPOINT)).options();
            Map<String, String> given = new LinkedHashMap<>();
            given.put("out", out.toString());
            given.put("gpus", Integer.toString(gpus));
            given.put("backend", "cpu");
            given.put("threads", "1");
            TrainOptions o = TrainOptions.forResume(stored, given);
            assertEquals(6 / gpus, o.batch(), "the global batch of 6 split over " + gpus + " rank(s)");
            assertEquals(6, o.globalBatch());
            train(o);
            Checkpoint got = Checkpoint.load(out.resolve(Trainer.CHECKPOINT));
            assertEquals(want.step(), got.step());
            assertEquals(want.dataPosition(), got.dataPosition());
            assertArrayEquals(want.rngState(), got.rngState(), "sampler position after resuming on " + gpus);
            maxRelative("on " + gpus + ": weight", got.weights(), want.weights());
            maxRelative("on " + gpus + ": optim.m", got.optimM(), want.optimM());
            maxRelative("on " + gpus + ": optim.v", got.optimV(), want.optimV());
            assertEquals(gpus, TrainCheckpoint.load(out.resolve(Trainer.CHECKPOINT)).options().parallel().gpus(),
                    "the checkpoint records the ranks it was written with");
        }
    }

    @Test
    void aGlobalBatchThatDoesNotSplitIsRefusedAndAGivenBatchSaysWhatChanges() throws Exception {
        Path out = dir.resolve("run");
        train(linear(out, 2, 3).stopAfter(1).build());
        TrainOptions stored = TrainCheckpoint.load(out.resolve(Trainer.CHECKPOINT)).options();
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TrainOptions.forResume(stored, Map.of("out", out.toString(), "gpus", "4")));
        assertTrue(e.getMessage().contains("global batch of 6") && e.getMessage().contains("4 ranks")
                && e.getMessage().contains("--batch"), e.getMessage());
        TrainOptions o = TrainOptions.forResume(stored, Map.of("out", out.toString(), "gpus", "4", "batch", "2",
                "backend", "cpu", "threads", "1"));
        assertEquals(8, o.globalBatch());
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        try (Trainer t = Trainer.open(o, new PrintStream(log, true, StandardCharsets.UTF_8))) {
            assertEquals(1, t.step());
        }
        String text = log.toString(StandardCharsets.UTF_8);
        assertTrue(text.contains("global batch changes from 6 to 8") && text.contains("no window is skipped"), text);
    }

    @Test
    void shardedMomentsTrainBitwiseWhatUnshardedOnesTrain() throws Exception {
        Path plain = dir.resolve("plain");
        Path sharded = dir.resolve("sharded");
        train(options(plain, 2, 2).build());
        TrainOptions.Builder s = options(sharded, 2, 2);
        s.parallel().shardOptimizer(true);
        train(s.build());
        Checkpoint a = Checkpoint.load(plain.resolve(Trainer.CHECKPOINT));
        Checkpoint b = Checkpoint.load(sharded.resolve(Trainer.CHECKPOINT));
        for (String k : a.weights().keySet()) {
            assertTrue(a.weights().get(k).contentEquals(b.weights().get(k)), "weight " + k);
            assertTrue(a.optimM().get(k).contentEquals(b.optimM().get(k)), "optim.m " + k + " (gathered from the shards)");
            assertTrue(a.optimV().get(k).contentEquals(b.optimV().get(k)), "optim.v " + k);
        }
        assertTrue(TrainCheckpoint.load(sharded.resolve(Trainer.CHECKPOINT)).options().parallel().shardOptimizer());
    }

    @Test
    void keepBestOnShardedRanksCapturesTogetherAcrossAResume() throws Exception {
        // --keep-best's capture reads the sharded moments collectively: every rank must decide alike, also
        // after a resume, where the best so far comes from rank 0's metrics
        Path out = dir.resolve("best");
        TrainOptions.Builder b = options(out, 2, 2).keepBest(true).evalEvery(1);
        b.parallel().shardOptimizer(true).commTimeoutS(20);
        assertTimeoutPreemptively(Duration.ofSeconds(60), () -> {
            train(b.stopAfter(3).build());
            // a best no later validation beats: only rank 0 reads it (from the metrics), so every rank must
            // learn it from rank 0, or a rank that thinks it has none captures alone
            Path metrics = out.resolve(Trainer.METRICS);
            List<String> lines = new java.util.ArrayList<>(Files.readAllLines(metrics));
            StepMetrics last = StepMetrics.fromJson(lines.getLast());
            lines.set(lines.size() - 1, last.withValidation(last.valLoss(), 0.01, last.valRoutedFraction()).toJson());
            Files.write(metrics, lines);
            TrainOptions.Builder again = options(out, 2, 2).keepBest(true).evalEvery(1).resume(true);
            again.parallel().shardOptimizer(true).commTimeoutS(20);
            assertEquals(STEPS, train(again.build()).step());
        });
        Checkpoint best = Checkpoint.load(out.resolve(Trainer.BEST));
        assertTrue(best.step() >= 1 && best.step() <= 3, "best of the first half, at step " + best.step());
        for (String k : best.weights().keySet()) {
            assertTrue(best.optimV().get(k).numel() == best.weights().get(k).numel(), "full moments gathered: " + k);
        }
    }

    @Test
    void aRankThatFailsStopsEveryRankWithOneErrorNamingIt() throws Exception {
        TrainOptions.Builder b = options(dir.resolve("fail"), 3, 1);
        b.parallel().commTimeoutS(60);  // the abort, not the timeout, must stop the others
        RankFailedException e = assertTimeoutPreemptively(Duration.ofSeconds(30), () -> {
            try (Trainer t = Trainer.open(b.build(), null)) {
                t.onStep((rank, step) -> {
                    if (rank == 1 && step == 2) {
                        throw new IllegalStateException("injected failure");
                    }
                });
                return assertThrows(RankFailedException.class, t::run);
            }
        });
        assertEquals(1, e.rank());
        assertTrue(e.getMessage().startsWith("rank 1 of 3 failed: IllegalStateException: injected failure"), e.getMessage());
        assertEquals(2, e.getSuppressed().length, "the other two ranks' errors: " + Arrays.toString(e.getSuppressed()));
        for (Throwable s : e.getSuppressed()) {
            assertInstanceOf(CommunicatorException.class, s, "stopped by the abort: " + s);
        }
        assertTrue(!Files.exists(dir.resolve("fail").resolve(Trainer.CHECKPOINT)), "no checkpoint of a failed run");
    }

    @Test
    void badDataParallelOptionsAreRefusedNamingTheOption() {
        Path out = dir.resolve("bad");
        TrainOptions.Builder zero = options(out, 0, 2);
        assertMessage(zero, "--gpus (0) must be >= 1");
        TrainOptions.Builder node = options(out, 1, 2);
        node.parallel().nodes(2).nodeRank(2);
        assertMessage(node, "--node-rank (2) must be below --nodes (2)");
        TrainOptions.Builder local = options(out, 1, 2);
        local.parallel().nodes(2).comm("local");
        assertMessage(local, "--nodes 2 needs --comm nccl");
        TrainOptions.Builder nccl = options(out, 2, 2);
        nccl.parallel().comm("nccl");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Trainer.open(nccl.build(), null));
        assertTrue(e.getMessage().contains("--comm nccl needs --backend cuda"), e.getMessage());
        assertThrows(IllegalArgumentException.class, () -> options(out, 1, 2).parallel().comm("mpi"));
        assertTrue(!Files.exists(out.resolve(Trainer.CHECKPOINT)));
    }

    private static void assertMessage(TrainOptions.Builder b, String want) {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> b.build().validate());
        assertTrue(e.getMessage().contains(want), e.getMessage());
    }

    /** Copies a run's folder (checkpoint, metrics) to resume it elsewhere. */
    private static void copyRun(Path from, Path to) throws Exception {
        Files.createDirectories(to);
        for (String f : List.of(Trainer.CHECKPOINT, Trainer.METRICS)) {
            Files.copy(from.resolve(f), to.resolve(f));
        }
    }

    private static void close(String what, double want, double got) {
        double err = Math.abs(got - want) / Math.max(Math.abs(want), 1e-30);
        assertTrue(err <= F32, what + ": " + got + " vs " + want + " (relative error " + err + " > " + F32 + ")");
    }

    /** Each tensor's ||got - want|| / ||want|| within {@link #F32}; returns the largest. */
    private static double maxRelative(String what, Map<String, TensorData> got, Map<String, TensorData> want) {
        assertEquals(List.copyOf(want.keySet()), List.copyOf(got.keySet()), what + " names");
        double worst = 0;
        for (String k : want.keySet()) {
            TensorData g = got.get(k);
            TensorData w = want.get(k);
            double num = 0;
            double den = 0;
            for (long i = 0; i < w.numel(); i++) {
                double d = g.get(i) - w.get(i);
                num += d * d;
                den += w.get(i) * w.get(i);
            }
            double rel = den == 0 ? Math.sqrt(num) : Math.sqrt(num / den);
            assertTrue(rel <= F32, what + " " + k + ": relative error " + rel + " > " + F32);
            worst = Math.max(worst, rel);
        }
        return worst;
    }

    @Test
    void oneRankWithoutCommunicatorWritesWhatItAlwaysDid() throws Exception {
        // --gpus 1 and --comm auto: no communicator, so the step is bitwise the single-rank trainer's
        try (Trainer t = Trainer.open(options(dir.resolve("single"), 1, 2).stopAfter(1).build(), null)) {
            t.run();
            assertNull(t.model().communicator());
        }
        TrainOptions.Builder b = options(dir.resolve("local1"), 1, 2).stopAfter(1);
        b.parallel().comm("local");
        try (Trainer t = Trainer.open(b.build(), null)) {
            t.run();
            assertEquals(1, t.model().communicator().world());
        }
        Checkpoint a = Checkpoint.load(dir.resolve("single").resolve(Trainer.CHECKPOINT));
        Checkpoint c = Checkpoint.load(dir.resolve("local1").resolve(Trainer.CHECKPOINT));
        for (String k : a.weights().keySet()) {
            assertTrue(a.weights().get(k).contentEquals(c.weights().get(k)), "a LOCAL communicator of one rank: weight " + k);
            assertTrue(a.optimV().get(k).contentEquals(c.optimV().get(k)), "optim.v " + k);
        }
    }
}
