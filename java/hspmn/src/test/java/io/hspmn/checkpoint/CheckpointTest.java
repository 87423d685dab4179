package io.hspmn.checkpoint;

import io.hspmn.Backend;
import io.hspmn.Block;
import io.hspmn.Context;
import io.hspmn.HspmnConfig;
import io.hspmn.io.SafeTensors;
import io.hspmn.io.SafeTensors.DType;
import io.hspmn.io.SafeTensorsWriter;
import io.hspmn.io.TensorData;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class CheckpointTest {
    @TempDir
    Path dir;

    @Test
    void saveLoadRoundTripIsExact() throws IOException {
        Checkpoint c = Fixtures.lm(3, 16, 2, Fixtures.tinyBlock(), true);
        Path p = dir.resolve("c.safetensors");
        c.save(p);
        Checkpoint back = Checkpoint.load(p);
        assertTrue(c.contentEquals(back));
        assertEquals(1003, back.step());
        assertEquals(3 * 123_456_789L, back.dataPosition());
        assertArrayEquals(c.rngState(), back.rngState());
        assertEquals(List.copyOf(LanguageModelLayout.shapes(Fixtures.tinyBlock(), 16, 2).keySet()),
                List.copyOf(back.weights().keySet()));
        try (SafeTensors st = SafeTensors.open(p)) {
            assertTrue(st.contains("blocks.1.attn.k"));
            assertTrue(st.contains("optim.m.embedding"));
            assertTrue(st.contains("optim.v.norm"));
            assertEquals(DType.BF16, st.entry("embedding").dtype());
            assertArrayEquals(new long[] {16, 8}, st.entry("embedding").shape());
        }
        Report r = CheckpointVerifier.fromConfig().verify(p);
        assertTrue(r.ok(), r.render());
        assertTrue(r.render().contains("2 layers"), r.render());
        assertTrue(r.render().endsWith("OK\n"), r.render());
    }

    @Test
    void verifierFindsNonFiniteValuesAndConfigMismatches() throws IOException {
        Checkpoint good = Fixtures.lm(5, 16, 1, Fixtures.tinyBlock(), false);
        Map<String, TensorData> w = new LinkedHashMap<>(good.weights());
        short[] bits = new short[8];
        bits[2] = 0x7fc0; // NaN
        bits[5] = (short) 0xff80; // -Inf
        w.put("norm", TensorData.bf16(new long[] {8}, bits));
        w.put("blocks.0.attn.q", TensorData.bf16(new long[] {8, 4}, new short[32]));
        w.remove("blocks.0.router.w");
        w.put("extra", TensorData.f32(new long[] {1}, new float[] {1}));
        Checkpoint bad = new Checkpoint(good.configJson(), 1, 2, new long[] {1}, w, Map.of(), Map.of());
        Path p = dir.resolve("bad.safetensors");
        bad.save(p);
        Report r = CheckpointVerifier.fromConfig().verify(p);
        assertFalse(r.ok());
        String all = String.join("\n", r.problems());
        assertTrue(all.contains("\"norm\" has 2 non-finite values (first at flat index 2)"), all);
        assertTrue(all.contains("\"blocks.0.attn.q\" has shape [8, 4], config wants [8, 8]"), all);
        assertTrue(all.contains("\"blocks.0.router.w\" is missing"), all);
        assertTrue(all.contains("\"extra\" is not in the config's model"), all);
        assertEquals(4, r.problems().size(), all);
        // Loading does not judge values or the config's shapes: a diverged run must stay inspectable.
        assertTrue(Checkpoint.load(p).contentEquals(bad));
    }

    @Test
    void explicitExpectationsOverrideTheConfig() throws IOException {
        Checkpoint c = new Checkpoint("{\"anything\":true}", 0, 0, new long[0],
                Map.of("w", TensorData.f32(new long[] {2}, new float[] {1, 2})), Map.of(), Map.of());
        Path p = dir.resolve("e.safetensors");
        c.save(p);
        Report plain = CheckpointVerifier.fromConfig().verify(p);
        assertTrue(plain.ok(), plain.render());
        assertTrue(plain.render().contains("names and shapes not checked"), plain.render());
        Report strict = CheckpointVerifier.expecting(Map.of("w", new CheckpointVerifier.Expected(new long[] {2}, Set.of(DType.BF16))))
                .verify(p);
        assertEquals(List.of("weight \"w\" is F32, config wants [BF16]"), strict.problems());
    }

    @Test
    void loadAndVerifyRefuseWhatIsNotACheckpoint() throws IOException {
        Path p = dir.resolve("plain.safetensors");
        new SafeTensorsWriter().add("w", TensorData.f32(new long[] {1}, new float[] {1}))
                .add("optim.m.zz", TensorData.f32(new long[] {1}, new float[] {1})).write(p);
        IOException e = assertThrows(IOException.class, () -> Checkpoint.load(p));
        assertTrue(e.getMessage().contains("__metadata__.format"), e.getMessage());
        Report r = CheckpointVerifier.fromConfig().verify(p);
        String all = String.join("\n", r.problems());
        for (String want : List.of("format", "format_version", "config is missing", "step", "data_position",
                "rng.state is missing", "\"optim.m.zz\" has no weight \"zz\"")) {
            assertTrue(all.contains(want), want + " not in " + all);
        }
        Report missing = CheckpointVerifier.fromConfig().verify(dir.resolve("nope"));
        assertTrue(missing.firstProblem().startsWith("cannot read the file"), missing.render());
    }

    @Test
    void constructorRefusesInconsistentState() {
        Map<String, TensorData> w = Map.of("a", TensorData.f32(new long[] {2}, new float[2]));
        TensorData wrong = TensorData.f32(new long[] {3}, new float[3]);
        assertThrows(IllegalArgumentException.class, () -> new Checkpoint("{}", 0, 0, new long[0], w, Map.of("a", wrong), Map.of()));
        assertThrows(IllegalArgumentException.class, () -> new Checkpoint("{}", 0, 0, new long[0], w, Map.of(), Map.of("b", wrong)));
        assertThrows(IllegalArgumentException.class, () -> new Checkpoint("{}", -1, 0, new long[0], w, Map.of(), Map.of()));
        assertThrows(IllegalArgumentException.class, () -> new Checkpoint("{a:1}", 0, 0, new long[0], w, Map.of(), Map.of()));
        assertThrows(IllegalArgumentException.class, () -> new Checkpoint("[]", 0, 0, new long[0], w, Map.of(), Map.of()));
        assertThrows(IllegalArgumentException.class,
                () -> new Checkpoint("{}", 0, 0, new long[0], Map.of("rng.x", wrong), Map.of(), Map.of()));
    }

    /** A kill or error half way through a checkpoint save leaves the previous checkpoint intact. */
    @Test
    void failedSaveLeavesPreviousCheckpointIntact() throws IOException {
        Path p = dir.resolve("latest.safetensors");
        Fixtures.lm(1, 16, 1, Fixtures.tinyBlock(), true).save(p);
        byte[] before = Files.readAllBytes(p);
        Checkpoint next = Fixtures.lm(2, 256, 2, HspmnConfig.builder().dim(64).numHeads(4).numKvHeads(2).build(), true);
        IOException e = assertThrows(IOException.class, () -> next.writer().progress((done, total) -> {
            if (done > total / 2) {
                throw new IOException("injected failure after " + done + " of " + total + " bytes");
            }
        }).write(p));
        assertTrue(e.getMessage().startsWith("injected"), e.getMessage());
        assertArrayEquals(before, Files.readAllBytes(p));
        try (Stream<Path> s = Files.list(dir)) {
            assertEquals(List.of(p), s.toList());
        }
        assertTrue(CheckpointVerifier.fromConfig().verify(p).ok());
        next.save(p);
        assertTrue(Checkpoint.load(p).contentEquals(next));
    }

    /** The layout's names and shapes are the native block's (hspmn_block_param_name/describe). */
    @Test
    void layoutMatchesTheNativeBlock() {
        HspmnConfig cfg = HspmnConfig.builder().dim(16).numHeads(4).numKvHeads(2).mlpRatio(3).convKernel(5).build();
        try (Context ctx = Context.create(Backend.CPU); Block b = Block.create(ctx, cfg, 1)) {
            Map<String, long[]> mine = LanguageModelLayout.blockShapes(cfg);
            assertEquals(b.paramNames(), List.copyOf(mine.keySet()));
            for (String n : b.paramNames()) {
                assertArrayEquals(b.paramShape(n), mine.get(n), n);
            }
        }
    }

    @Test
    void headerLengthIsAlignedAndReadableByHand() throws IOException {
        Path p = dir.resolve("h.safetensors");
        Fixtures.lm(9, 16, 1, Fixtures.tinyBlock(), false).save(p);
        byte[] raw = Files.readAllBytes(p);
        long n = ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN).getLong();
        assertEquals(0, n % 8);
    }
}
