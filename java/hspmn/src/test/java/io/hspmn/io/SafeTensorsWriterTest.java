package io.hspmn.io;

import io.hspmn.io.SafeTensors.DType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Set;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class SafeTensorsWriterTest {
    @TempDir
    Path dir;

    static SafeTensorsWriter sample() {
        return new SafeTensorsWriter()
                .metadata("k", "v \"quoted\" ü")
                .add("f32", TensorData.f32(new long[] {2, 3}, new float[] {1, -2, 3.5f, 0, Float.MIN_VALUE, 1e30f}))
                .add("f64", TensorData.f64(new long[] {2}, new double[] {Math.PI, -0.0}))
                .add("bf16", TensorData.bf16(new long[] {3}, new short[] {0x3f80, (short) 0xc000, 0x0001}))
                .add("i32", TensorData.i32(new long[] {1, 1}, new int[] {-7}))
                .add("i64", TensorData.i64(new long[] {2}, new long[] {Long.MIN_VALUE, Long.MAX_VALUE}))
                .add("u8", TensorData.u8(new long[] {5}, new byte[] {0, 1, (byte) 200, (byte) 255, 9}))
                .add("empty", TensorData.f32(new long[] {0, 4}, new float[0]))
                .add("scalar", TensorData.f32(new long[] {}, new float[] {42}));
    }

    @Test
    void roundTripsEveryDtypeWithAlignedHeader() throws IOException {
        Path p = dir.resolve("a.safetensors");
        sample().write(p);
        byte[] raw = Files.readAllBytes(p);
        long n = ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN).getLong();
        assertEquals(0, (8 + n) % 8, "data section must start 8-byte aligned");
        byte last = raw[(int) (8 + n - 1)];
        assertTrue(last == '}' || last == ' ', "header ends in '}' or space padding, got " + last);
        try (SafeTensors st = SafeTensors.open(p)) {
            assertEquals("v \"quoted\" ü", st.metadata().get("k"));
            assertEquals(List.of("f32", "f64", "bf16", "i32", "i64", "u8", "empty", "scalar"), List.copyOf(st.names()));
            assertArrayEquals(new float[] {1, -2, 3.5f, 0, Float.MIN_VALUE, 1e30f}, st.floats("f32"));
            assertArrayEquals(new long[] {2, 3}, st.entry("f32").shape());
            assertEquals(DType.F64, st.entry("f64").dtype());
            assertEquals(Math.PI, st.bytes("f64").get(ValueLayout.JAVA_DOUBLE_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 0));
            assertArrayEquals(new float[] {1f, -2f, Float.intBitsToFloat(0x00010000)}, st.floats("bf16"));
            assertArrayEquals(new int[] {-7}, st.ints("i32"));
            assertArrayEquals(new long[] {Long.MIN_VALUE, Long.MAX_VALUE}, st.longs("i64"));
            assertArrayEquals(new float[] {0, 1, 200, 255, 9}, st.floats("u8"));
            assertEquals(0, st.bytes("empty").byteSize());
            assertArrayEquals(new long[] {}, st.entry("scalar").shape());
            assertArrayEquals(new float[] {42}, st.floats("scalar"));
        }
    }

    @Test
    void writesNativeSegmentsLargerThanOneChunk() throws IOException {
        Path p = dir.resolve("big.safetensors");
        long n = (3L << 20) / 4 + 17; // crosses the 1 MiB copy chunk, not at a chunk boundary
        ValueLayout.OfInt le = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
        try (Arena a = Arena.ofConfined()) {
            MemorySegment s = a.allocate(4 * n);
            for (long i = 0; i < n; i++) {
                s.set(le, 4 * i, (int) (i * 2654435761L));
            }
            new SafeTensorsWriter().add("x", new TensorData(DType.I32, new long[] {n}, s)).write(p);
            try (SafeTensors st = SafeTensors.open(p)) {
                assertEquals(-1, st.bytes("x").mismatch(s));
            }
        }
    }

    @Test
    void refusesBadTensors() {
        SafeTensorsWriter w = new SafeTensorsWriter().add("a", TensorData.f32(new long[] {1}, new float[] {1}));
        assertThrows(IllegalArgumentException.class, () -> w.add("a", TensorData.f32(new long[] {1}, new float[] {1})));
        assertThrows(IllegalArgumentException.class, () -> w.add("__metadata__", TensorData.f32(new long[] {1}, new float[] {1})));
        assertThrows(IllegalArgumentException.class, () -> w.add("", TensorData.f32(new long[] {1}, new float[] {1})));
        assertThrows(IllegalArgumentException.class, () -> TensorData.f32(new long[] {3}, new float[] {1}));
        assertThrows(IllegalArgumentException.class, () -> TensorData.f32(new long[] {-1}, new float[0]));
        assertThrows(IllegalArgumentException.class, () -> TensorData.byteSize(DType.F64, new long[] {1L << 40, 1L << 30}));
    }

    /** A failure half way through the data leaves the previous file byte for byte and no temp file. */
    @Test
    void failureMidSaveKeepsPreviousFile() throws IOException {
        Path p = dir.resolve("ckpt.safetensors");
        sample().write(p);
        byte[] before = Files.readAllBytes(p);
        long[] calls = {0};
        SafeTensorsWriter w = new SafeTensorsWriter()
                .add("x", TensorData.f32(new long[] {1 << 20}, new float[1 << 20]))
                .progress((done, total) -> {
                    calls[0]++;
                    if (done >= total / 2) {
                        throw new IOException("injected: disk full at " + done + " of " + total);
                    }
                });
        IOException e = assertThrows(IOException.class, () -> w.write(p));
        assertTrue(e.getMessage().startsWith("injected"), e.getMessage());
        assertTrue(calls[0] >= 3, "the hook must have fired after data was written, fired " + calls[0]);
        assertArrayEquals(before, Files.readAllBytes(p));
        try (Stream<Path> s = Files.list(dir)) {
            assertEquals(List.of(p), s.toList(), "only the previous file may remain");
        }
    }

    @Test
    void replacesAnExistingFileKeepingItsPermissions() throws IOException {
        Path p = dir.resolve("r.safetensors");
        sample().write(p);
        assertEquals("rw-r--r--", java.nio.file.attribute.PosixFilePermissions.toString(Files.getPosixFilePermissions(p)),
                "a new file gets the usual permissions, not the temp file's owner-only ones");
        Files.setPosixFilePermissions(p, java.nio.file.attribute.PosixFilePermissions.fromString("rw-rw----"));
        new SafeTensorsWriter().add("only", TensorData.i32(new long[] {1}, new int[] {5})).write(p);
        try (SafeTensors st = SafeTensors.open(p)) {
            assertEquals(Set.of("only"), st.names());
            assertFalse(st.contains("f32"));
        }
        assertEquals("rw-rw----", java.nio.file.attribute.PosixFilePermissions.toString(Files.getPosixFilePermissions(p)));
    }

    /**
     * Issue 11: a process killed mid-save leaves .checkpoint.safetensors.*.tmp (46 MB each) that nothing
     * removed. The next save of the same target deletes those whose process is gone (and, for the old naming
     * without a pid, those untouched for ten minutes), and leaves saves in progress alone.
     */
    @Test
    void aSaveRemovesTheTempFilesOfKilledSaves(@TempDir Path dir) throws Exception {
        Process p = new ProcessBuilder("true").start();
        p.waitFor();
        long dead = p.pid();
        long live = ProcessHandle.current().pid();
        Path target = dir.resolve("checkpoint.safetensors");
        Path orphan = Files.write(dir.resolve(".checkpoint.safetensors." + dead + ".123456.tmp"), new byte[1000]);
        Path legacyOld = Files.write(dir.resolve(".checkpoint.safetensors.4472619876.tmp"), new byte[10]);
        Files.setLastModifiedTime(legacyOld, java.nio.file.attribute.FileTime.fromMillis(System.currentTimeMillis() - 3_600_000));
        Path legacyFresh = Files.write(dir.resolve(".checkpoint.safetensors.99887766.tmp"), new byte[10]);
        Path inProgress = Files.write(dir.resolve(".checkpoint.safetensors." + live + ".42.tmp"), new byte[10]);
        Path otherTarget = Files.write(dir.resolve(".metrics.jsonl." + dead + ".1.tmp"), new byte[10]);
        new SafeTensorsWriter().add("w", TensorData.f32(new long[] {1}, new float[] {1})).write(target);
        assertFalse(Files.exists(orphan));
        assertFalse(Files.exists(legacyOld));
        assertTrue(Files.exists(legacyFresh) && Files.exists(inProgress) && Files.exists(otherTarget));
        try (Stream<Path> files = Files.list(dir)) {
            // the save's own temp file is gone too: renamed to the target
            assertEquals(Set.of(target, legacyFresh, inProgress, otherTarget), Set.copyOf(files.toList()));
        }
        assertEquals(0, SafeTensorsWriter.removeOrphans(target));
    }
}
