package io.hspmn.cli;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.hspmn.data.ByteCorpus;
import io.hspmn.train.TrainingFixtures;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** {@code hspmn eval} end to end: the run's split and context by default, text and JSON, user errors. */
class EvalCommandTest {
    @TempDir
    Path dir;

    @Test
    void evaluatesTheWholeHeldOutSplitOfARun() throws Exception {
        Path out = dir.resolve("run");
        CliTest.Result train = CliTest.run(new CliTest().tiny(out, "--val-fraction", "0.02").toArray(String[]::new));
        assertEquals(0, train.exit(), train.all());

        Path json = dir.resolve("eval/eval.json");
        CliTest.Result eval = CliTest.run("eval", "--ckpt", out.toString(), "--backend", "cpu", "--threads", "2", "--json",
                json.toString());
        assertEquals(0, eval.exit(), eval.all());
        long valBytes;
        try (ByteCorpus c = ByteCorpus.open(TrainingFixtures.CORPUS)) {
            valBytes = c.split(0.02).validation().size();
        }
        JsonObject o = JsonParser.parseString(Files.readString(json)).getAsJsonObject();
        assertEquals(valBytes, o.get("split_bytes").getAsLong());
        assertEquals(valBytes - 1, o.get("scored_bytes").getAsLong(), "every byte but the first, once");
        assertEquals(32, o.get("seq_len").getAsInt(), "the run's --seq-len");
        assertEquals(4, o.get("batch").getAsInt(), "the run's --batch");
        assertEquals((valBytes - 1 + 31) / 32, o.get("windows").getAsLong());
        assertEquals(8, o.get("step").getAsLong());
        assertEquals(0.02, o.get("val_fraction").getAsDouble(), 0);
        double bits = o.get("bits_per_byte").getAsDouble();
        assertTrue(bits > 1 && bits < 8.5, "bits/byte " + bits);
        assertEquals(1, o.getAsJsonArray("routed_fraction").size());
        assertTrue(o.get("tokens_per_second").getAsDouble() > 0);
        assertEquals("cpu", o.get("backend").getAsString());
        assertTrue(eval.out().contains(String.format(java.util.Locale.ROOT, "validation %.4f bits/byte", bits)), eval.out());
        assertTrue(eval.out().contains("routed fraction per layer (evaluation mode, no noise) ["), eval.out());

        // another context and batch: the same bytes scored, in other windows
        CliTest.Result other = CliTest.run("eval", "--ckpt", out.toString(), "--backend", "cpu", "--threads", "2",
                "--seq-len", "50", "--batch", "7", "--json", json.toString());
        assertEquals(0, other.exit(), other.all());
        o = JsonParser.parseString(Files.readString(json)).getAsJsonObject();
        assertEquals(valBytes - 1, o.get("scored_bytes").getAsLong());
        assertEquals((valBytes - 1 + 49) / 50, o.get("windows").getAsLong());
    }

    @Test
    void userErrors() {
        String[][] cases = {
            {"eval"}, {"--ckpt is required"},
            {"eval", "--ckpt", dir.resolve("nowhere").toString()}, {"no checkpoint at"},
            {"eval", "--ckpt", "x", "--bogus", "1"}, {"unknown option --bogus"},
        };
        for (int i = 0; i < cases.length; i += 2) {
            CliTest.Result r = CliTest.run(cases[i]);
            assertEquals(2, r.exit(), r.all());
            assertTrue(r.err().contains(cases[i + 1][0]), r.err());
            assertFalse(r.all().contains("\tat "), r.all());
        }
        CliTest.Result help = CliTest.run("eval", "--help");
        assertEquals(0, help.exit());
        assertTrue(help.out().contains("--val-fraction F") && help.out().contains("--json FILE"), help.out());
    }
}
