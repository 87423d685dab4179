package io.hspmn;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.hspmn.bench.Bench;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The Java bench command on the CPU backend at a tiny size: every mode runs and the JSON holds its numbers. */
class BenchTest {
    private record Run(int code, String out, String err) {
    }

    private static Run bench(String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int code = Bench.run(args, new PrintStream(out, true, StandardCharsets.UTF_8),
                new PrintStream(err, true, StandardCharsets.UTF_8));
        return new Run(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    @Test
    void allModesWriteTheirNumbers(@TempDir Path dir) throws Exception {
        Path json = dir.resolve("bench.json");
        Run r = bench("--backend", "cpu", "--small", "--seq", "64", "--iters", "2", "--warmup", "1", "--mode", "all",
                "--long-seq", "128,256", "--stress-start", "128", "--max-seq", "256", "--threads", "2",
                "--json", json.toString());
        assertEquals(0, r.code(), "exit status; stderr: " + r.err() + "\nstdout: " + r.out());

        JsonObject root = JsonParser.parseString(Files.readString(json)).getAsJsonObject();
        assertEquals("java", root.get("runtime").getAsString());
        assertEquals("cpu", root.get("backend").getAsString());
        assertEquals(256, root.getAsJsonObject("config").get("D").getAsInt());
        JsonArray results = root.getAsJsonArray("results");
        // throughput, longctx x2, train, stress x2 (128, then 256 = the cap)
        List<String> seen = new ArrayList<>();
        for (JsonElement e : results) {
            JsonObject o = e.getAsJsonObject();
            for (String field : new String[] {"name", "B", "S", "train", "rho", "ms", "tok_s", "peak_gib"}) {
                assertTrue(o.has(field), field + " missing in " + o);
            }
            assertFalse(o.has("error"), o.toString());
            long b = o.get("B").getAsLong();
            long s = o.get("S").getAsLong();
            double ms = o.get("ms").getAsDouble();
            assertTrue(ms > 0, o.toString());
            assertTrue(o.get("tok_s").getAsDouble() > 0, o.toString());
            assertEquals(b * s / (ms / 1e3), o.get("tok_s").getAsDouble(), 1e-6 * o.get("tok_s").getAsDouble(),
                    "tok_s is B*S over the median time");
            assertTrue(o.get("peak_gib").getAsDouble() > 0, o.toString());
            assertEquals(0.2, o.get("rho").getAsDouble(), 1e-12);
            seen.add(o.get("name").getAsString() + " " + b + "x" + s + (o.get("train").getAsBoolean() ? " train" : ""));
        }
        assertEquals(List.of("hspmn throughput 2x64", "hspmn longctx 1x128", "hspmn longctx 1x256",
                "hspmn train 2x64 train", "hspmn stress 1x128", "hspmn stress 1x256"), seen);

        JsonObject stress = root.getAsJsonObject("stress");
        assertEquals(256, stress.get("max_S").getAsLong());
        assertEquals("max_seq", stress.get("stopped_by").getAsString());
        assertTrue(stress.get("peak_gib").getAsDouble() > 0);
        // a longer context holds more: the peak must grow with S, or it is not measuring this run
        double p128 = results.get(4).getAsJsonObject().get("peak_gib").getAsDouble();
        double p256 = results.get(5).getAsJsonObject().get("peak_gib").getAsDouble();
        assertTrue(p256 > p128, "peak at S=256 (" + p256 + ") over S=128 (" + p128 + ")");

        assertTrue(r.out().contains("stress: largest B=1 context that ran: S=256"), r.out());
        assertTrue(r.out().contains("tok/s"), r.out());
    }

    @Test
    void stressThatFitsNothingSaysSoAndFails(@TempDir Path dir) throws Exception {
        // x alone would be 64 TiB at S = 2^37, D = 256: the library's allocation fails, no machine has it
        Path json = dir.resolve("stress.json");
        Run r = bench("--backend", "cpu", "--small", "--mode", "stress", "--iters", "1", "--stress-start",
                Long.toString(1L << 37), "--max-seq", Long.toString(1L << 40), "--json", json.toString());
        assertEquals(1, r.code(), "nothing ran, so the command failed; stdout: " + r.out());
        assertTrue(r.out().contains("stress: nothing ran from S=137438953472"), r.out());
        JsonObject root = JsonParser.parseString(Files.readString(json)).getAsJsonObject();
        JsonObject step = root.getAsJsonArray("results").get(0).getAsJsonObject();
        assertEquals("HSPMN_ERR_OUT_OF_MEMORY", step.get("status").getAsString(), step.toString());
        assertFalse(step.has("tok_s"), step.toString());
        JsonObject stress = root.getAsJsonObject("stress");
        assertEquals(0, stress.get("max_S").getAsLong());
        assertEquals("out_of_memory", stress.get("stopped_by").getAsString());
    }

    @Test
    void badInputIsAMessageAndExitOne() {
        Run heads = bench("--backend", "cpu", "--small", "--heads", "3");
        assertEquals(1, heads.code());
        assertTrue(heads.err().contains("num_heads"), heads.err());

        Run mode = bench("--mode", "fast");
        assertEquals(1, mode.code());
        assertTrue(mode.err().contains("--mode must be"), mode.err());

        Run number = bench("--batch", "x");
        assertEquals(1, number.code());
        assertTrue(number.err().contains("--batch"), number.err());

        Run json = bench("--backend", "cpu", "--small", "--seq", "16", "--iters", "1", "--json",
                "/nonexistent-dir/bench.json");
        assertEquals(1, json.code());
        assertTrue(json.err().startsWith("error: "), json.err());
        assertFalse(json.out().contains("hspmn throughput"), "no run before the JSON path is known writable");
    }

    @Test
    void graphNeedsCuda() {
        Run r = bench("--backend", "cpu", "--small", "--seq", "16", "--iters", "1", "--graph");
        assertEquals(1, r.code());
        assertTrue(r.err().contains("--graph needs the CUDA backend (this run resolved to cpu)"), r.err());
        assertFalse(r.out().contains("hspmn throughput "), "nothing ran: " + r.out());
    }

    @Test
    void cudaWithoutADeviceIsAMessage() {
        try (Context ctx = Context.create(Backend.CUDA)) {
            Assumptions.abort("a CUDA device is present: this test is about its absence");
        } catch (BackendUnavailableException expected) {
            // no CUDA here: the bench must say so and stop
        }
        Run r = bench("--backend", "cuda", "--small", "--iters", "1");
        assertEquals(1, r.code());
        assertTrue(r.err().contains("no cuda context"), r.err());
        assertTrue(r.err().contains("NOT_BUILT") || r.err().contains("NO_DEVICE"), r.err());
    }
}
