package io.hspmn;

import io.hspmn.io.SafeTensors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class SafeTensorsTest {
    @TempDir
    Path dir;

    Path write(String header, byte[] data) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        ByteBuffer b = ByteBuffer.allocate(8 + h.length + data.length).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(h.length).put(h).put(data);
        Path p = Files.createTempFile(dir, "t", ".safetensors");
        Files.write(p, b.array());
        return p;
    }

    static byte[] floats(float... v) {
        ByteBuffer b = ByteBuffer.allocate(4 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float f : v) {
            b.putFloat(f);
        }
        return b.array();
    }

    @Test
    void readsValidFile() throws IOException {
        byte[] data = new byte[16];
        System.arraycopy(floats(1f, 2f), 0, data, 0, 8);
        ByteBuffer.wrap(data, 8, 4).order(ByteOrder.LITTLE_ENDIAN).putInt(-7);
        ByteBuffer.wrap(data, 12, 4).order(ByteOrder.LITTLE_ENDIAN).putShort(BFloat16.fromFloat(1.5f)).putShort(BFloat16.fromFloat(-3f));
        Path p = write("{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                + "\"i\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[8,12]},"
                + "\"h\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[12,16]}}   ", data);
        try (SafeTensors st = SafeTensors.open(p)) {
            assertEquals("v", st.metadata().get("k"));
            assertArrayEquals(new float[] {1f, 2f}, st.floats("a"));
            assertArrayEquals(new int[] {-7}, st.ints("i"));
            assertArrayEquals(new float[] {1.5f, -3f}, st.floats("h"));
            assertArrayEquals(new long[] {1, 2}, st.entry("h").shape());
            assertEquals(4, st.bytes("h").byteSize());
            assertThrows(IllegalArgumentException.class, () -> st.entry("zzz"));
        }
    }

    void invalid(String header, byte[] data, String fragment) throws IOException {
        Path p = write(header, data);
        IOException e = assertThrows(IOException.class, () -> SafeTensors.open(p));
        assertTrue(e.getMessage().contains(fragment), e.getMessage());
    }

    @Test
    void rejectsBadHeaders() throws IOException {
        byte[] d8 = new byte[8];
        invalid("{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", d8, "F16");
        invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", d8, "needs 12");
        invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", d8, "outside");
        invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}",
                d8, "overlap");
        invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", d8, "negative");
        invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", d8, "unknown key");
        invalid("{\"__metadata__\":{\"k\":1}}", d8, "__metadata__");
        invalid("{not json", d8, "JSON");
    }

    /** Rules past the old reader's: strict JSON, no duplicate keys, data tiled exactly, UTF-8, integer literals. */
    @Test
    void rejectsWhatALenientReaderWouldTake() throws IOException {
        byte[] d4 = new byte[4];
        String a = "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}";
        invalid("{" + a + "," + a + "}", d4, "\"a\" appears twice");
        invalid("{\"__metadata__\":{},\"__metadata__\":{}," + a + "}", d4, "\"__metadata__\" appears twice");
        invalid("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}," + a + "}", d4, "appears twice");
        invalid("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", d4, "dtype appears twice");
        invalid("{'a':{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", d4, "JSON");
        invalid("{" + a + "} trailing", d4, "JSON");
        invalid("{" + a + "}", new byte[8], "[4, 8) at the end belong to no tensor");
        invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", new byte[8], "[0, 4) before tensor");
        invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", d4, "not an integer");
        invalid("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}}", d4, "64 bits");
        invalid("{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", d4, "overflows 64 bits");
        invalid(" {" + a + "}", d4, "start with '{'");
        Path p = write("{\"\u00ff\":1}", d4);
        byte[] raw = Files.readAllBytes(p);
        raw[10] = (byte) 0xc3; // a lone lead byte: not UTF-8
        raw[11] = (byte) 0x28;
        Files.write(p, raw);
        IOException e = assertThrows(IOException.class, () -> SafeTensors.open(p));
        assertTrue(e.getMessage().contains("UTF-8"), e.getMessage());
    }

    @Test
    void readsI64AndU8() throws IOException {
        ByteBuffer b = ByteBuffer.allocate(10).order(ByteOrder.LITTLE_ENDIAN).putLong(-5).put((byte) 1).put((byte) 250);
        Path p = write("{\"l\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                + "\"u\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[8,10]}}", b.array());
        try (SafeTensors st = SafeTensors.open(p)) {
            assertArrayEquals(new long[] {-5}, st.longs("l"));
            assertArrayEquals(new float[] {1, 250}, st.floats("u"));
            assertThrows(IllegalArgumentException.class, () -> st.longs("u"));
        }
    }

    @Test
    void rejectsBadHeaderLength() throws IOException {
        Path p = Files.createTempFile(dir, "t", ".safetensors");
        ByteBuffer b = ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(1L << 40).putLong(0);
        Files.write(p, b.array());
        IOException e = assertThrows(IOException.class, () -> SafeTensors.open(p));
        assertTrue(e.getMessage().contains("header length"), e.getMessage());
        Files.write(p, new byte[3]);
        assertThrows(IOException.class, () -> SafeTensors.open(p));
    }
}
