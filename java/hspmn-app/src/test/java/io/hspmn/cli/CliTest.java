package io.hspmn.cli;

import io.hspmn.metrics.MetricsWriter;
import io.hspmn.train.TrainingFixtures;
import io.hspmn.train.Trainer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The command line: help, user errors (exit 2, one message, no stack trace), and train, verify, sample end to end. */
class CliTest {
    @TempDir
    Path dir;

    record Result(int exit, byte[] outBytes, String err) {
        String out() {
            return new String(outBytes, StandardCharsets.UTF_8);
        }

        String all() {
            return out() + err;
        }
    }

    static Result run(String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int exit = Main.run(args, new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8));
        return new Result(exit, out.toByteArray(), err.toString(StandardCharsets.UTF_8));
    }

    static final String CORPUS = TrainingFixtures.CORPUS.toString();

    /** A run small enough for a unit test: 1 layer of width 32, 8 steps of 4 x 32 bytes. */
    List<String> tiny(Path out, String... extra) {
        List<String> a = new ArrayList<>(List.of("train", "--data", CORPUS, "--out", out.toString(), "--dim", "32",
                "--layers", "1", "--heads", "2", "--kv-heads", "1", "--seq-len", "32", "--batch", "4", "--steps", "8",
                "--warmup", "2", "--lr", "1e-2", "--eval-every", "4", "--eval-batches", "2", "--backend", "cpu", "--threads", "2"));
        a.addAll(List.of(extra));
        return a;
    }

    @Test
    void helpForEveryCommand() {
        Result top = run("--help");
        assertEquals(0, top.exit());
        for (String c : List.of("train", "verify", "sample", "demo", "bench")) {
            assertTrue(top.out().contains(c), top.out());
        }
        Result train = run("train", "--help");
        assertEquals(0, train.exit(), train.all());
        for (String o : List.of("--data PATH", "--out DIR", "--resume", "--dim", "--layers", "--heads", "--kv-heads", "--seq-len",
                "--batch", "--grad-accum", "--steps", "--lr", "--backend", "--routing", "--router-entropy-coef", "metrics.jsonl")) {
            assertTrue(train.out().contains(o), o + " missing from:\n" + train.out());
        }
        assertTrue(train.out().contains("--routing threshold|topk") && train.out().contains("[threshold]"), train.out());
        assertEquals(0, run("verify", "--help").exit());
        assertTrue(run("verify", "-h").out().contains("usage: hspmn verify"));
        Result sample = run("sample", "--help");
        assertEquals(0, sample.exit());
        assertTrue(sample.out().contains("--prompt TEXT") && sample.out().contains("--max-new"), sample.out());
        Result none = run();
        assertEquals(2, none.exit());
        assertTrue(none.err().contains("usage: hspmn COMMAND"), none.err());
    }

    static Stream<Arguments> userErrors() {
        return Stream.of(
                Arguments.of(List.of("fly"), "unknown command 'fly'"),
                Arguments.of(List.of("train", "--data", CORPUS, "--out", "x", "--bogus", "1"), "unknown option --bogus"),
                Arguments.of(List.of("train", "--data", CORPUS, "--out", "x", "--lr"), "--lr needs a value"),
                Arguments.of(List.of("train", "--data", CORPUS, "--out", "x", "--lr", "fast"), "--lr: 'fast' is not a finite number"),
                Arguments.of(List.of("train", "--data", CORPUS, "--out", "x", "--steps", "1.5"), "--steps: '1.5' is not an integer"),
                Arguments.of(List.of("train", "--out", "x"), "--data is required"),
                Arguments.of(List.of("train", "--data", CORPUS), "--out is required"),
                Arguments.of(List.of("train", "--data", CORPUS, "--out", "x", "--dim", "30", "--heads", "4"), "num_heads"),
                Arguments.of(List.of("train", "--data", CORPUS, "--out", "x", "--batch", "0"), "--batch (0) must be >= 1"),
                Arguments.of(List.of("train", "--data", CORPUS, "--out", "x", "--routing", "random"), "--routing: 'random'"),
                Arguments.of(List.of("train", "--data", CORPUS, "--out", "x", "--backend", "gpu"), "--backend: 'gpu'"),
                Arguments.of(List.of("train", "--data", CORPUS, "--out", "x", "--steps", "3", "--steps", "4"), "--steps is given twice"),
                Arguments.of(List.of("train", "--data", CORPUS, "--out", "x", "extra"), "unexpected argument 'extra'"),
                Arguments.of(List.of("train", "--data", CORPUS, "--out", "x", "--resume=yes"), "--resume takes no value"),
                Arguments.of(List.of("train", "--resume"), "--resume needs --out"),
                Arguments.of(List.of("verify"), "verify needs a checkpoint"),
                Arguments.of(List.of("sample", "--prompt", "hi"), "--ckpt is required"),
                Arguments.of(List.of("sample", "--ckpt", "nowhere", "--prompt", "hi", "--max-new", "-3"), "--max-new (-3) must be >= 0"),
                Arguments.of(List.of("sample", "--ckpt", "nowhere", "--prompt", "hi"), "no checkpoint at nowhere"));
    }

    @ParameterizedTest
    @MethodSource("userErrors")
    void userErrorsExitTwoWithOneMessage(List<String> args, String message) {
        Result r = run(args.toArray(String[]::new));
        assertEquals(2, r.exit(), r.all());
        assertTrue(r.err().startsWith("error: "), r.err());
        assertTrue(r.err().contains(message), "want '" + message + "' in:\n" + r.err());
        assertFalse(r.all().contains("\tat ") || r.all().contains("Exception"), "a stack trace or exception name:\n" + r.all());
    }

    @Test
    void dataAndOutProblemsAreUserErrors() throws Exception {
        List<String> a = tiny(dir.resolve("a"));
        a.set(a.indexOf("--data") + 1, dir.resolve("no-such.txt").toString());
        Result none = run(a.toArray(String[]::new));
        assertEquals(2, none.exit(), none.all());
        assertTrue(none.err().contains("does not exist"), none.err());
        Path binary = dir.resolve("binary.bin");
        Files.write(binary, new byte[] {1, 2, 0, 3});
        a.set(a.indexOf("--data") + 1, binary.toString());
        Result bin = run(a.toArray(String[]::new));
        assertEquals(2, bin.exit(), bin.all());
        assertTrue(bin.err().contains("binary"), bin.err());
        Path small = dir.resolve("small.txt");
        Files.writeString(small, "too short to hold a window of 33 bytes");
        a.set(a.indexOf("--data") + 1, small.toString());
        Result tooSmall = run(a.toArray(String[]::new));
        assertEquals(2, tooSmall.exit(), tooSmall.all());
        assertTrue(tooSmall.err().contains("fewer than one window"), tooSmall.err());
        Result resumeNothing = run("train", "--out", dir.resolve("empty").toString(), "--resume");
        assertEquals(2, resumeNothing.exit());
        assertTrue(resumeNothing.err().contains("no checkpoint to continue"), resumeNothing.err());
        Path file = dir.resolve("a-file.txt");
        Files.writeString(file, "not a folder");
        Result outIsFile = run(tiny(file).toArray(String[]::new));
        assertEquals(2, outIsFile.exit(), outIsFile.all());
        assertTrue(outIsFile.err().contains("--out " + file + " is a file, not a folder"), outIsFile.err());
        assertEquals("not a folder", Files.readString(file));
        for (Result r : List.of(none, bin, tooSmall, resumeNothing, outIsFile)) {
            assertFalse(r.all().contains("\tat "), r.all());
        }
    }

    @Test
    void trainVerifySampleEndToEnd() throws Exception {
        Path out = dir.resolve("run");
        Result train = run(tiny(out).toArray(String[]::new));
        assertEquals(0, train.exit(), train.all());
        assertTrue(train.out().contains("step 8/8: validation"), train.out());
        assertTrue(Files.size(out.resolve(Trainer.CHECKPOINT)) > 0);
        assertEquals(8, MetricsWriter.read(out.resolve(Trainer.METRICS)).size());
        String html = Files.readString(out.resolve(Trainer.REPORT));
        assertTrue(html.contains("Routed fraction per layer") && html.contains("<svg"), "report.html");

        // a second train into the same folder is refused, not overwritten
        Result again = run(tiny(out).toArray(String[]::new));
        assertEquals(2, again.exit());
        assertTrue(again.err().contains("already holds a run"), again.err());

        Result verify = run("verify", out.toString());
        assertEquals(0, verify.exit(), verify.all());
        assertTrue(verify.out().contains("config: vocab 256, 1 layers, dim 32") && verify.out().strip().endsWith("OK"), verify.out());

        Result sample = run("sample", "--ckpt", out.toString(), "--prompt", "The ", "--max-new", "24", "--backend", "cpu");
        assertEquals(0, sample.exit(), sample.all());
        assertTrue(sample.out().startsWith("The "), sample.out());
        // raw bytes: a byte-level model may stop inside a UTF-8 character
        assertEquals(4 + 24 + System.lineSeparator().length(), sample.outBytes().length, "prompt, 24 bytes, newline");
        Result twice = run("sample", "--ckpt", out.resolve(Trainer.CHECKPOINT).toString(), "--prompt", "The ", "--max-new", "24",
                "--backend", "cpu");
        assertTrue(java.util.Arrays.equals(sample.outBytes(), twice.outBytes()), "greedy sampling is deterministic");

        // a damaged checkpoint: verify reports it and exits 1; sample refuses it as a user error
        Path bad = dir.resolve("bad.safetensors");
        byte[] ck = Files.readAllBytes(out.resolve(Trainer.CHECKPOINT));
        Files.write(bad, java.util.Arrays.copyOf(ck, ck.length - 100));
        Result broken = run("verify", bad.toString());
        assertEquals(1, broken.exit(), broken.all());
        assertTrue(broken.out().contains("INVALID"), broken.out());
        Result sampleBroken = run("sample", "--ckpt", bad.toString(), "--prompt", "x");
        assertEquals(2, sampleBroken.exit(), sampleBroken.all());
        assertFalse(sampleBroken.all().contains("\tat "), sampleBroken.all());
        Result empty = run("sample", "--ckpt", out.toString(), "--prompt", "");
        assertEquals(2, empty.exit());
        assertTrue(empty.err().contains("--prompt is empty"), empty.err());
    }

    @Test
    void stopAfterBetweenValidationsSaysWhereTheFigureWasMeasured() {
        Result r = run(tiny(dir.resolve("run"), "--stop-after", "6").toArray(String[]::new)); // validations at 4 and 8
        assertEquals(0, r.exit(), r.all());
        assertTrue(r.out().contains("stopped at step 6/8; last validation (at step 4) "), r.out());
        assertFalse(r.out().contains("step 6/8: validation"), r.out());
    }

    @Test
    void resumeThroughTheCommandLine() throws Exception {
        Path out = dir.resolve("run");
        assertEquals(0, run(tiny(out, "--stop-after", "4").toArray(String[]::new)).exit());
        Result changed = run("train", "--out", out.toString(), "--resume", "--lr", "0.5");
        assertEquals(2, changed.exit(), changed.all());
        assertTrue(changed.err().contains("--lr 0.5 (the checkpoint has 0.01)"), changed.err());
        Result resumed = run("train", "--out", out.toString(), "--resume", "--backend", "cpu", "--threads", "2");
        assertEquals(0, resumed.exit(), resumed.all());
        assertTrue(resumed.out().contains("resuming at step 4") && resumed.out().contains("step 8/8: validation"), resumed.out());
        Result done = run("train", "--out", out.toString(), "--resume");
        assertEquals(2, done.exit());
        assertTrue(done.err().contains("already at --steps 8"), done.err());
        assertEquals(8, MetricsWriter.read(out.resolve(Trainer.METRICS)).size());
    }
}
