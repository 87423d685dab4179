package io.hspmn;

import io.hspmn.checkpoint.Checkpoint;
import io.hspmn.cli.Main;
import io.hspmn.metrics.MetricsWriter;
import io.hspmn.metrics.StepMetrics;
import io.hspmn.train.TrainingFixtures;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@code hspmn train --gpus N} on CUDA (ci/gpu.sh's java stage): an NCCL communicator of one rank, plain
 * and ZeRO-1, trains bitwise what the run without a communicator trains (native/README.md "Data
 * parallelism": every call with a comm of size 1 is the same arithmetic), and --gpus above the host's
 * devices is refused naming the device. NCCL must load (HSPMN_NCCL names the wheel's library).
 */
@Tag("gpu")
class GpuDataParallelTest {
    @TempDir
    Path dir;

    record Run(int exit, String out) {
    }

    static Run train(Path out, String... extra) {
        List<String> a = new ArrayList<>(List.of("train", "--data", TrainingFixtures.CORPUS.toString(), "--out",
                out.toString(), "--backend", "cuda", "--dim", "128", "--layers", "2", "--heads", "2", "--kv-heads", "1",
                "--seq-len", "128", "--batch", "4", "--grad-accum", "2", "--steps", "6", "--warmup", "2", "--eval-every", "3",
                "--eval-batches", "2", "--seed", "5"));
        a.addAll(List.of(extra));
        ByteArrayOutputStream o = new ByteArrayOutputStream();
        int exit = Main.run(a.toArray(String[]::new), new PrintStream(o, true, StandardCharsets.UTF_8),
                new PrintStream(o, true, StandardCharsets.UTF_8));
        return new Run(exit, o.toString(StandardCharsets.UTF_8));
    }

    @Test
    void ncclOfOneRankTrainsBitwiseWhatNoCommunicatorTrains() throws Exception {
        GpuAssumptions.requireCuda();
        assertTrue(Communicator.available(Communicator.Kind.NCCL), "NCCL does not load: "
                + Communicator.unavailableReason(Communicator.Kind.NCCL) + " (set HSPMN_NCCL to libnccl.so.2)");
        Run plain = train(dir.resolve("plain"));
        assertEquals(0, plain.exit(), plain.out());
        assertTrue(!plain.out().contains("data parallel:"), "no communicator for --gpus 1 --comm auto: " + plain.out());
        Checkpoint want = Checkpoint.load(dir.resolve("plain").resolve("checkpoint.safetensors"));
        List<StepMetrics> wantLog = MetricsWriter.read(dir.resolve("plain").resolve("metrics.jsonl"));
        for (boolean shard : new boolean[] {false, true}) {
            String name = shard ? "nccl-zero1" : "nccl";
            Run r = shard ? train(dir.resolve(name), "--gpus", "1", "--comm", "nccl", "--shard-optimizer")
                    : train(dir.resolve(name), "--gpus", "1", "--comm", "nccl");
            assertEquals(0, r.exit(), r.out());
            assertTrue(r.out().contains("data parallel: 1 rank (1 node x 1), nccl communicator"), r.out());
            Checkpoint got = Checkpoint.load(dir.resolve(name).resolve("checkpoint.safetensors"));
            for (String k : want.weights().keySet()) {
                assertTrue(want.weights().get(k).contentEquals(got.weights().get(k)), name + ": weight " + k);
                assertTrue(want.optimM().get(k).contentEquals(got.optimM().get(k)), name + ": optim.m " + k);
                assertTrue(want.optimV().get(k).contentEquals(got.optimV().get(k)), name + ": optim.v " + k);
            }
            List<StepMetrics> log = MetricsWriter.read(dir.resolve(name).resolve("metrics.jsonl"));
            for (int i = 0; i < wantLog.size(); i++) {
                assertEquals(wantLog.get(i).loss(), log.get(i).loss(), name + ": step " + (i + 1) + " loss");
                assertEquals(wantLog.get(i).gradNorm(), log.get(i).gradNorm(), name + ": step " + (i + 1) + " grad norm");
            }
            System.out.printf("gpu data parallel: --gpus 1 --comm nccl%s bitwise the plain run over %d steps (loss %.6f); %s%n",
                    shard ? " --shard-optimizer" : "", wantLog.size(), log.getLast().loss(), r.out().lines()
                            .filter(l -> l.contains("gradient all-reduce")).reduce((x, y) -> y).orElse("no all-reduce line"));
        }
    }

    @Test
    void moreGpusThanTheHostHasIsRefusedNamingTheDevice() throws Exception {
        GpuAssumptions.requireCuda();
        int devices = 0;
        while (devices < 64) {
            try (Context c = Context.create(ContextOptions.defaults().withBackend(Backend.CUDA).withDevice(devices))) {
                devices++;
            } catch (HspmnException e) {
                break;
            }
        }
        int n = devices + 1;
        Run r = train(dir.resolve("too-many"), "--gpus", Integer.toString(n));
        assertEquals(2, r.exit(), "exit status 2: a usage error; " + r.out());
        assertTrue(r.out().contains("--gpus " + n + ": rank " + devices + " cannot open CUDA device " + devices), r.out());
        System.out.printf("gpu data parallel: %d device(s); --gpus %d refused: %s%n", devices, n,
                r.out().lines().filter(l -> l.startsWith("error:")).findFirst().orElse(""));
    }
}
