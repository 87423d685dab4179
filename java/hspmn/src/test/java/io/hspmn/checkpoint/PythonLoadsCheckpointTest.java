package io.hspmn.checkpoint;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.hspmn.HspmnConfig;
import io.hspmn.ReferencePython;
import io.hspmn.io.TensorData;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * native/reference/load_checkpoint.py reads a Java-written checkpoint with the safetensors library and
 * loads every block into hspmn_ref.HSPMNBlock (strict state_dict); its per-tensor summary must match
 * what Java wrote. Needs the repository's .venv (torch, safetensors); skipped, saying so, without it.
 */
class PythonLoadsCheckpointTest {
    @TempDir
    Path dir;

    /** load_checkpoint.py on {@code ckpt}, with {@code extra} options. */
    static ReferencePython.Result run(Path ckpt, String... extra) throws IOException, InterruptedException {
        List<String> args = new java.util.ArrayList<>(List.of("load_checkpoint.py", ckpt.toString()));
        args.addAll(List.of(extra));
        return ReferencePython.run(120, args.toArray(String[]::new));
    }

    @Test
    void referenceLoadsAJavaWrittenCheckpoint() throws Exception {
        HspmnConfig block = HspmnConfig.builder().dim(16).numHeads(4).numKvHeads(2).mlpRatio(2).convKernel(3).build();
        Checkpoint c = Fixtures.lm(11, 32, 2, block, true);
        Path p = dir.resolve("java.safetensors");
        c.save(p);
        ReferencePython.Result r = run(p, "--json");
        assertEquals(0, r.exit(), r.out());
        String last = r.out().strip().lines().reduce((a, b) -> b).orElseThrow();
        JsonObject s = JsonParser.parseString(last).getAsJsonObject();
        assertEquals(0, s.getAsJsonArray("problems").size(), last);
        assertEquals(2, s.get("layers_loaded").getAsInt());
        assertEquals(c.step(), s.get("step").getAsLong());
        assertEquals(c.dataPosition(), s.get("data_position").getAsLong());
        assertEquals(c.rngState()[0], s.getAsJsonArray("rng_state").get(0).getAsLong());
        JsonObject ts = s.getAsJsonObject("tensors");
        int checked = 0;
        for (var group : List.of(Map.entry("", c.weights()), Map.entry("optim.m.", c.optimM()), Map.entry("optim.v.", c.optimV()))) {
            for (Map.Entry<String, TensorData> e : group.getValue().entrySet()) {
                JsonObject t = ts.getAsJsonObject(group.getKey() + e.getKey());
                TensorData d = e.getValue();
                String name = group.getKey() + e.getKey();
                assertEquals(d.dtype() == io.hspmn.io.SafeTensors.DType.BF16 ? "bfloat16" : "float32",
                        t.get("dtype").getAsString(), name);
                assertEquals(java.util.Arrays.toString(d.shape()), t.get("shape").toString().replace(",", ", "), name);
                // First and last values exactly (float64 widening is exact for bf16/f32).
                assertEquals(d.get(0), t.get("first").getAsDouble(), name);
                assertEquals(d.get(d.numel() - 1), t.get("last").getAsDouble(), name);
                double sum = 0;
                for (long i = 0; i < d.numel(); i++) {
                    sum += Math.abs(d.get(i));
                }
                // Summation order differs (torch pairwise vs sequential): bounded by n * eps * sum.
                assertEquals(sum, t.get("sum_abs").getAsDouble(), d.numel() * 0x1p-52 * sum, name);
                checked++;
            }
        }
        assertEquals(3 * c.weights().size(), checked);
    }

    @Test
    void referenceRejectsAStateDictThatIsNotTheModel() throws Exception {
        HspmnConfig block = Fixtures.tinyBlock();
        Checkpoint good = Fixtures.lm(4, 16, 1, block, false);
        var w = new java.util.LinkedHashMap<>(good.weights());
        w.remove("blocks.0.attn.o");
        w.put("blocks.0.attn.out", TensorData.bf16(new long[] {8, 8}, new short[64]));
        Path p = dir.resolve("renamed.safetensors");
        new Checkpoint(good.configJson(), 1, 1, new long[] {1}, w, Map.of(), Map.of()).save(p);
        ReferencePython.Result r = run(p);
        assertEquals(1, r.exit(), r.out());
        assertTrue(r.out().contains("attn.o") && r.out().contains("INVALID"), r.out());
    }
}
