package io.hspmn.cli;

import io.hspmn.checkpoint.Checkpoint;
import io.hspmn.io.TensorData;
import io.hspmn.metrics.MetricsWriter;
import io.hspmn.train.Trainer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The command line against what issue 11 found: runs too large for memory, damaged or NaN-producing
 * checkpoints, and diverging runs, each ending with one message and a non-zero exit.
 */
class HardeningCliTest {
    @TempDir
    Path dir;

    private static final String CORPUS = CliTest.CORPUS;

    private static CliTest.Result run(List<String> args) {
        return CliTest.run(args.toArray(String[]::new));
    }

    /** CliTest's tiny run, with {@code --name value} pairs set (replaced where the tiny run has them). */
    private List<String> tiny(Path out, String... pairs) {
        List<String> a = new java.util.ArrayList<>(new CliTest().tiny(out));
        for (int i = 0; i < pairs.length; i += 2) {
            int at = a.indexOf(pairs[i]);
            if (at >= 0) {
                a.set(at + 1, pairs[i + 1]);
            } else {
                a.add(pairs[i]);
                a.add(pairs[i + 1]);
            }
        }
        return a;
    }

    private static void assertOneMessage(CliTest.Result r) {
        assertFalse(r.all().contains("\tat ") || r.all().contains("Exception"), "a stack trace or exception name:\n" + r.all());
    }

    /**
     * The two commands grew until the kernel killed them (exit 137; BENCHMARKS.md). Now the model's
     * footprint and the training forward's are checked before anything is allocated: exit 1 with the bytes
     * needed and available.
     */
    @Test
    void runsTooLargeForMemoryAreRefusedBeforeAllocating() {
        CliTest.Result wide = run(List.of("train", "--data", CORPUS, "--out", dir.resolve("wide").toString(), "--dim", "32768",
                "--heads", "2", "--kv-heads", "1", "--seq-len", "64", "--batch", "1", "--backend", "cpu"));
        assertEquals(1, wide.exit(), wide.all());
        assertTrue(wide.err().contains("hspmn_model_create: out of memory: a model of 2 layers, dim 32768")
                && wide.err().contains("of host memory, but") && wide.err().contains("are available"), wide.err());
        assertOneMessage(wide);

        CliTest.Result batch = run(List.of("train", "--data", CORPUS, "--out", dir.resolve("batch").toString(), "--batch",
                "100000", "--backend", "cpu", "--threads", "2"));
        assertEquals(1, batch.exit(), batch.all());
        assertTrue(batch.err().contains("hspmn_model_forward: out of memory: a training forward over [B, S] = [100000, 256]")
                && batch.err().contains("nothing was allocated"), batch.err());
        assertOneMessage(batch);
        assertFalse(Files.exists(dir.resolve("batch").resolve(Trainer.CHECKPOINT)));
    }

    /**
     * 3e38 in the final norm's weights: finite, so the checkpoint is intact (its checksums hold, verify passes),
     * but the forward overflows and every logit is NaN. Before, sample printed NUL bytes (argmax over NaN is
     * 0) and exited 0; now it stops with an error.
     */
    @Test
    void aModelWithNonFiniteLogitsStopsSample() throws Exception {
        Path out = dir.resolve("run");
        assertEquals(0, run(tiny(out)).exit());
        Path ckpt = out.resolve(Trainer.CHECKPOINT);
        Checkpoint c = Checkpoint.load(ckpt);
        Map<String, TensorData> w = new LinkedHashMap<>(c.weights());
        float[] huge = new float[Math.toIntExact(w.get("norm").numel())];
        Arrays.fill(huge, 3e38f);
        w.put("norm", TensorData.f32(w.get("norm").shape(), huge));
        Path broken = dir.resolve("huge-norm.safetensors");
        new Checkpoint(c.configJson(), c.step(), c.dataPosition(), c.rngState(), w, c.optimM(), c.optimV()).save(broken);
        CliTest.Result verify = run(List.of("verify", broken.toString()));
        assertEquals(0, verify.exit(), verify.all()); // intact and finite: only running it tells

        CliTest.Result sample = run(List.of("sample", "--ckpt", broken.toString(), "--prompt", "The ", "--max-new", "8",
                "--backend", "cpu"));
        assertEquals(1, sample.exit(), sample.all());
        assertTrue(sample.err().contains("logits are not finite") && sample.err().contains("damaged or have diverged"),
                sample.err());
        for (byte b : sample.outBytes()) {
            assertTrue(b != 0, "sample printed a NUL byte: " + Arrays.toString(sample.outBytes()));
        }
        assertOneMessage(sample);
    }

    /** A flipped data bit: verify names the tensor and exits 1; sample refuses the file (before: OK and NULs). */
    @Test
    void aDamagedCheckpointIsNamedByVerifyAndRefusedBySample() throws Exception {
        Path out = dir.resolve("run");
        assertEquals(0, run(tiny(out)).exit());
        Path ckpt = out.resolve(Trainer.CHECKPOINT);
        Path bad = dir.resolve("flipped.safetensors");
        byte[] b = Files.readAllBytes(ckpt);
        b[b.length - 1000] ^= 0x10; // in the data section, far from the header
        Files.write(bad, b);
        CliTest.Result verify = run(List.of("verify", bad.toString()));
        assertEquals(1, verify.exit(), verify.all());
        assertTrue(verify.out().contains("PROBLEM: damaged tensor \""), verify.out());
        CliTest.Result sample = run(List.of("sample", "--ckpt", bad.toString(), "--prompt", "x", "--backend", "cpu"));
        assertEquals(2, sample.exit(), sample.all());
        assertTrue(sample.err().contains("damaged tensor \""), sample.err());
        assertOneMessage(sample);
    }

    /**
     * --lr 1e30: the first update blows the weights up and every later gradient norm is non-finite. Before,
     * 19 of 20 steps were skipped and the run exited 0 with a checkpoint; now --max-skipped consecutive skips
     * stop it with exit 1, and the checkpoint is the last one written before the skips.
     */
    @Test
    void aDivergingRunStopsAndKeepsTheLastGoodCheckpoint() throws Exception {
        Path out = dir.resolve("run");
        List<String> args = tiny(out, "--lr", "1e30", "--warmup", "0", "--save-every", "1", "--max-skipped", "3");
        CliTest.Result r = run(args);
        assertEquals(1, r.exit(), r.all());
        assertTrue(r.err().contains("error: training diverged: steps 2 to 4 all had a non-finite gradient norm"), r.err());
        assertTrue(r.err().contains("is the last written before them (step 1)"), r.err());
        assertOneMessage(r);
        assertEquals(1, Checkpoint.load(out.resolve(Trainer.CHECKPOINT)).step());
        assertEquals(4, MetricsWriter.read(out.resolve(Trainer.METRICS)).size());
        assertTrue(Files.exists(out.resolve(Trainer.REPORT)));

        // --max-skipped 0 turns the stop off: the old behaviour, all steps run
        Path out2 = dir.resolve("run2");
        CliTest.Result off = run(tiny(out2, "--lr", "1e30", "--warmup", "0", "--max-skipped", "0"));
        assertEquals(0, off.exit(), off.all());
        assertTrue(off.out().contains("7 step(s) skipped for a non-finite gradient norm"), off.out());
    }
}
