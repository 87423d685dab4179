package io.hspmn.cli;

import io.hspmn.train.TrainCheckpoint;
import io.hspmn.train.Trainer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@code hspmn train --gpus N} on the command line: CPU ranks, resume on another count, and the errors it gives. */
class DataParallelCliTest {
    @TempDir
    Path dir;

    static CliTest.Result train(Path out, String... extra) {
        List<String> a = new ArrayList<>(List.of("train", "--data", CliTest.CORPUS, "--out", out.toString(), "--dim", "32",
                "--layers", "1", "--heads", "2", "--kv-heads", "1", "--seq-len", "32", "--batch", "2", "--steps", "4",
                "--warmup", "1", "--eval-every", "2", "--eval-batches", "1", "--backend", "cpu", "--threads", "1"));
        a.addAll(List.of(extra));
        return CliTest.run(a.toArray(String[]::new));
    }

    @Test
    void twoCpuRanksTrainAndResumeOnOne() throws Exception {
        Path out = dir.resolve("run");
        CliTest.Result first = train(out, "--gpus", "2", "--stop-after", "2");
        assertEquals(0, first.exit(), first.all());
        assertTrue(first.out().contains("data parallel: 2 ranks (1 node x 2), local communicator; global batch 2 x 2"),
                first.out());
        assertTrue(first.out().contains("4 steps of 1 x 4 x 32 bytes"), "the global batch: " + first.out());
        assertTrue(first.out().contains("step 2: gradient all-reduce 1 bucket,"), first.out());
        CliTest.Result second = CliTest.run("train", "--out", out.toString(), "--resume", "--gpus", "1", "--backend", "cpu",
                "--threads", "1");
        assertEquals(0, second.exit(), second.all());
        assertTrue(second.out().contains("resuming at step 2") && !second.out().contains("data parallel:"), second.out());
        TrainCheckpoint.State s = TrainCheckpoint.load(out.resolve(Trainer.CHECKPOINT));
        assertEquals(4, s.step());
        assertEquals(1, s.options().parallel().gpus());
        assertEquals(4, s.options().batch(), "one rank carries the global batch of 4");
        assertEquals(4 * 4, s.checkpoint().dataPosition(), "windows: 4 steps x global batch 4");
    }

    @Test
    void badDataParallelInputIsOneErrorLineAndExit2() throws Exception {
        String[][] cases = {
            {"--gpus 0", "--gpus (0) must be >= 1", "--gpus", "0"},
            {"--node-rank 2 of 2", "--node-rank (2) must be below --nodes (2)", "--nodes", "2", "--node-rank", "2"},
            {"--nodes 2 on the CPU", "--nodes 2 needs --comm nccl", "--nodes", "2", "--node-rank", "1"},
            {"nccl on the CPU", "--comm nccl needs --backend cuda", "--gpus", "2", "--comm", "nccl"},
            {"--comm mpi", "--comm: 'mpi' is not auto, local or nccl", "--comm", "mpi"},
        };
        for (String[] c : cases) {
            Path out = dir.resolve("bad" + c[0].hashCode());
            String[] extra = java.util.Arrays.copyOfRange(c, 2, c.length);
            CliTest.Result r = train(out, extra);
            assertEquals(2, r.exit(), c[0] + ": " + r.all());
            assertTrue(r.err().startsWith("error: ") && r.err().contains(c[1]), c[0] + ": " + r.err());
            assertFalse(r.err().contains("\tat "), c[0] + ": no stack trace: " + r.err());
            assertFalse(Files.exists(out.resolve(Trainer.CHECKPOINT)), c[0]);
        }
        CliTest.Result help = CliTest.run("train", "--help");
        assertTrue(help.out().contains("--gpus N") && help.out().contains("--batch is per rank"), help.out());
    }
}
