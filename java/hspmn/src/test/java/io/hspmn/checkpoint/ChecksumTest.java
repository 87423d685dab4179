package io.hspmn.checkpoint;

import io.hspmn.io.InvalidSafeTensorsException;
import io.hspmn.io.SafeTensors;
import io.hspmn.io.SafeTensorsWriter;
import io.hspmn.io.TensorData;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Per-tensor checksums (issue 11): damage to the data section that keeps the file well formed and its
 * values finite (a flipped bit, 3e38 written into 16 weights) passed verify and loaded before; now verify
 * names the damaged tensor and load refuses it. A file written before checksums loads with a warning.
 */
class ChecksumTest {
    @TempDir
    Path dir;

    /** Where a tensor's data starts in the file. */
    static long dataStart(Path p, String name) throws IOException {
        try (SafeTensors st = SafeTensors.open(p)) {
            byte[] head = Files.readAllBytes(p);
            long n = ByteBuffer.wrap(head, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
            return 8 + n + st.entry(name).begin();
        }
    }

    Path saved() throws IOException {
        Checkpoint c = Fixtures.lm(3, 16, 2, Fixtures.tinyBlock(), true);
        Path p = dir.resolve("c.safetensors");
        c.save(p);
        return p;
    }

    @Test
    void everyTensorIsChecksummedAndAnIntactFileVerifies() throws IOException {
        Path p = saved();
        try (SafeTensors st = SafeTensors.open(p)) {
            Map<String, String> crc = Checksums.decode(st.metadata().get(Checksums.KEY));
            assertEquals(new ArrayList<>(st.names()).stream().sorted().toList(), crc.keySet().stream().sorted().toList());
            for (String name : st.names()) {
                assertEquals(Checksums.crc32(st.bytes(name)), crc.get(name), name);
            }
        }
        Report r = CheckpointVerifier.fromConfig().verify(p);
        assertTrue(r.ok(), r.render());
        assertTrue(r.render().contains("checksums: "), r.render());
        List<String> warnings = new ArrayList<>();
        Checkpoint.load(p, warnings::add);
        assertEquals(List.of(), warnings);
    }

    @Test
    void aFlippedDataBitIsADamagedTensor() throws IOException {
        Path p = saved();
        byte[] b = Files.readAllBytes(p);
        int at = Math.toIntExact(dataStart(p, "blocks.1.attn.v") + 5);
        b[at] ^= 0x01; // a bf16 mantissa bit: still finite, still a valid file
        Files.write(p, b);
        Report r = CheckpointVerifier.fromConfig().verify(p);
        assertFalse(r.ok(), r.render());
        assertEquals(1, r.problems().size(), r.render());
        assertTrue(r.firstProblem().startsWith("damaged tensor \"blocks.1.attn.v\""), r.render());
        InvalidSafeTensorsException e = assertThrows(InvalidSafeTensorsException.class, () -> Checkpoint.load(p));
        assertTrue(e.getMessage().contains("damaged tensor \"blocks.1.attn.v\""), e.getMessage());
    }

    @Test
    void hugeFiniteValuesWrittenIntoWeightsAreDamage() throws IOException {
        Path p = saved();
        byte[] b = Files.readAllBytes(p);
        // 3e38 into 16 f32 values of optim.m.embedding (finite: the finiteness check alone passes them)
        int at = Math.toIntExact(dataStart(p, "optim.m.embedding"));
        ByteBuffer bb = ByteBuffer.wrap(b).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < 16; i++) {
            bb.putFloat(at + 4 * i, 3e38f);
        }
        Files.write(p, b);
        Report r = CheckpointVerifier.fromConfig().verify(p);
        assertEquals(List.of("damaged tensor \"optim.m.embedding\": its data does not match the checksum written with it"),
                r.problems().stream().map(x -> x.substring(0, x.indexOf(" (crc32"))).toList(), r.render());
        assertThrows(InvalidSafeTensorsException.class, () -> Checkpoint.load(p));
    }

    /** A file written before checksums existed: the same tensors and metadata, without tensor_crc32. */
    @Test
    void aCheckpointWithoutChecksumsLoadsWithAWarning() throws IOException {
        Checkpoint c = Fixtures.lm(4, 16, 1, Fixtures.tinyBlock(), true);
        Path p = dir.resolve("old.safetensors");
        SafeTensorsWriter w = new SafeTensorsWriter().metadata("format", Checkpoint.FORMAT)
                .metadata("format_version", Checkpoint.FORMAT_VERSION).metadata("config", c.configJson())
                .metadata("step", Long.toString(c.step())).metadata("data_position", Long.toString(c.dataPosition()));
        c.weights().forEach(w::add);
        c.optimM().forEach((k, v) -> w.add(Checkpoint.OPTIM_M + k, v));
        c.optimV().forEach((k, v) -> w.add(Checkpoint.OPTIM_V + k, v));
        w.add(Checkpoint.RNG_STATE, TensorData.i64(new long[] {c.rngState().length}, c.rngState()));
        w.write(p);
        Report r = CheckpointVerifier.fromConfig().verify(p);
        assertTrue(r.ok(), r.render());
        assertTrue(r.render().contains("WARNING: no per-tensor checksums"), r.render());
        List<String> warnings = new ArrayList<>();
        assertTrue(Checkpoint.load(p, warnings::add).contentEquals(c));
        assertEquals(1, warnings.size(), warnings.toString());
        assertTrue(warnings.getFirst().contains("no per-tensor checksums"), warnings.getFirst());
    }

    @Test
    void aBrokenChecksumTableIsAProblem() throws IOException {
        Checkpoint c = Fixtures.lm(5, 16, 1, Fixtures.tinyBlock(), false);
        for (String bad : List.of("not json", "[]", "{\"embedding\": \"xyz\"}", "{\"embedding\": \"00000000\", \"ghost\": \"00000000\"}")) {
            Path p = dir.resolve("b.safetensors");
            SafeTensorsWriter w = new SafeTensorsWriter().metadata("format", Checkpoint.FORMAT)
                    .metadata("format_version", Checkpoint.FORMAT_VERSION).metadata("config", c.configJson())
                    .metadata("step", "1").metadata("data_position", "2").metadata(Checksums.KEY, bad);
            c.weights().forEach(w::add);
            w.add(Checkpoint.RNG_STATE, TensorData.i64(new long[] {1}, new long[] {1}));
            w.write(p);
            Report r = CheckpointVerifier.fromConfig().verify(p);
            assertFalse(r.ok(), bad + ": " + r.render());
            assertTrue(r.firstProblem().contains(Checksums.KEY), r.render());
            assertThrows(InvalidSafeTensorsException.class, () -> Checkpoint.load(p), bad);
        }
    }
}
