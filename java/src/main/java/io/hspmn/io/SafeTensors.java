package io.hspmn.io;

import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.math.BigInteger;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A read-only safetensors file, memory-mapped: 8-byte little-endian header length N, N bytes of JSON
 * header ({@code name -> {dtype, shape, data_offsets}} plus an optional {@code __metadata__} string map),
 * then the data. Everything in the header is validated before any tensor is handed out.
 */
public final class SafeTensors implements AutoCloseable {
    /** Headers past this are refused rather than parsed (the format's reference reader uses 100 MB). */
    public static final long MAX_HEADER_BYTES = 100L << 20;

    private static final ValueLayout.OfLong U64_LE = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfFloat F32_LE = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfDouble F64_LE = ValueLayout.JAVA_DOUBLE_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfInt I32_LE = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfShort I16_LE = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /** The dtypes this project reads and writes, with their element sizes. */
    public enum DType {
        BF16(2), F32(4), I32(4), F64(8);

        private final int byteSize;

        DType(int byteSize) {
            this.byteSize = byteSize;
        }

        public int byteSize() {
            return byteSize;
        }
    }

    /** One tensor's header entry; {@code begin}/{@code end} are offsets into the data section. */
    public record Entry(String name, DType dtype, long[] shape, long begin, long end) {
        public long numel() {
            long n = 1;
            for (long e : shape) {
                n *= e;
            }
            return n;
        }

        @Override
        public String toString() {
            return name + " " + dtype + " " + Arrays.toString(shape) + " [" + begin + ", " + end + ")";
        }
    }

    private final Path path;
    private final Arena arena;
    private final MemorySegment data;
    private final Map<String, Entry> entries;
    private final Map<String, String> metadata;

    private SafeTensors(Path path, Arena arena, MemorySegment data, Map<String, Entry> entries, Map<String, String> metadata) {
        this.path = path;
        this.arena = arena;
        this.data = data;
        this.entries = entries;
        this.metadata = metadata;
    }

    /** Maps and validates {@code path}; an invalid file gives an IOException saying what is wrong. */
    public static SafeTensors open(Path path) throws IOException {
        Arena arena = Arena.ofShared();
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size < 8) {
                throw bad(path, "file is " + size + " bytes, shorter than the 8-byte header length");
            }
            MemorySegment file = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            long n = file.get(U64_LE, 0);
            if (n < 2 || n > MAX_HEADER_BYTES || n > size - 8) {
                throw bad(path, "header length " + Long.toUnsignedString(n) + " is out of range (file is " + size
                        + " bytes, limit " + MAX_HEADER_BYTES + ")");
            }
            byte[] hdr = file.asSlice(8, n).toArray(ValueLayout.JAVA_BYTE);
            String json = new String(hdr, StandardCharsets.UTF_8);
            MemorySegment data = file.asSlice(8 + n);
            Map<String, String> meta = new LinkedHashMap<>();
            Map<String, Entry> entries = parseHeader(path, json, data.byteSize(), meta);
            return new SafeTensors(path, arena, data, entries, Collections.unmodifiableMap(meta));
        } catch (IOException | RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private static Map<String, Entry> parseHeader(Path path, String json, long dataSize, Map<String, String> meta)
            throws IOException {
        JsonObject root;
        try {
            JsonElement e = JsonParser.parseString(json.stripTrailing());
            if (!e.isJsonObject()) {
                throw bad(path, "header is not a JSON object");
            }
            root = e.getAsJsonObject();
        } catch (JsonParseException e) {
            throw bad(path, "header is not valid JSON: " + e.getMessage());
        }
        Map<String, Entry> entries = new LinkedHashMap<>();
        for (Map.Entry<String, JsonElement> kv : root.entrySet()) {
            String name = kv.getKey();
            if (name.equals("__metadata__")) {
                if (!kv.getValue().isJsonObject()) {
                    throw bad(path, "__metadata__ is not an object");
                }
                for (Map.Entry<String, JsonElement> m : kv.getValue().getAsJsonObject().entrySet()) {
                    if (!(m.getValue() instanceof JsonPrimitive p && p.isString())) {
                        throw bad(path, "__metadata__." + m.getKey() + " is not a string");
                    }
                    meta.put(m.getKey(), m.getValue().getAsString());
                }
                continue;
            }
            if (!kv.getValue().isJsonObject()) {
                throw bad(path, "tensor " + name + ": entry is not an object");
            }
            JsonObject o = kv.getValue().getAsJsonObject();
            for (String k : o.keySet()) {
                if (!Set.of("dtype", "shape", "data_offsets").contains(k)) {
                    throw bad(path, "tensor " + name + ": unknown key " + k);
                }
            }
            if (!(o.get("dtype") instanceof JsonPrimitive dt && dt.isString())) {
                throw bad(path, "tensor " + name + ": dtype missing or not a string");
            }
            DType dtype;
            try {
                dtype = DType.valueOf(dt.getAsString());
            } catch (IllegalArgumentException e) {
                throw bad(path, "tensor " + name + ": dtype " + dt.getAsString() + " not supported (BF16, F32, I32, F64)");
            }
            if (!(o.get("shape") instanceof JsonArray sh)) {
                throw bad(path, "tensor " + name + ": shape missing or not an array");
            }
            long[] shape = new long[sh.size()];
            BigInteger numel = BigInteger.ONE;
            for (int i = 0; i < shape.length; i++) {
                shape[i] = nonNegative(path, name, "shape[" + i + "]", sh.get(i));
                numel = numel.multiply(BigInteger.valueOf(shape[i]));
            }
            if (!(o.get("data_offsets") instanceof JsonArray off) || off.size() != 2) {
                throw bad(path, "tensor " + name + ": data_offsets missing or not [begin, end]");
            }
            long begin = nonNegative(path, name, "data_offsets[0]", off.get(0));
            long end = nonNegative(path, name, "data_offsets[1]", off.get(1));
            if (begin > end || end > dataSize) {
                throw bad(path, "tensor " + name + ": data_offsets [" + begin + ", " + end + ") outside the "
                        + dataSize + "-byte data section");
            }
            BigInteger expected = numel.multiply(BigInteger.valueOf(dtype.byteSize()));
            if (!expected.equals(BigInteger.valueOf(end - begin))) {
                throw bad(path, "tensor " + name + ": " + (end - begin) + " bytes for " + dtype + " "
                        + Arrays.toString(shape) + ", which needs " + expected);
            }
            entries.put(name, new Entry(name, dtype, shape, begin, end));
        }
        List<Entry> sorted = new ArrayList<>(entries.values());
        sorted.sort(Comparator.comparingLong(Entry::begin).thenComparingLong(Entry::end));
        for (int i = 1; i < sorted.size(); i++) {
            Entry a = sorted.get(i - 1);
            Entry b = sorted.get(i);
            if (b.begin() < a.end()) {
                throw bad(path, "tensors " + a.name() + " and " + b.name() + " overlap");
            }
        }
        return Collections.unmodifiableMap(entries);
    }

    private static long nonNegative(Path path, String name, String what, JsonElement e) throws IOException {
        if (!(e instanceof JsonPrimitive p && p.isNumber())) {
            throw bad(path, "tensor " + name + ": " + what + " is not a number");
        }
        try {
            long v = p.getAsBigDecimal().longValueExact();
            if (v < 0) {
                throw bad(path, "tensor " + name + ": " + what + " is negative");
            }
            return v;
        } catch (ArithmeticException ex) {
            throw bad(path, "tensor " + name + ": " + what + " is not a 64-bit integer");
        }
    }

    private static IOException bad(Path path, String why) {
        return new IOException("invalid safetensors file " + path + ": " + why);
    }

    public Path path() {
        return path;
    }

    /** The {@code __metadata__} strings (empty if absent). */
    public Map<String, String> metadata() {
        return metadata;
    }

    /** Tensor names in header order. */
    public Set<String> names() {
        return entries.keySet();
    }

    public boolean contains(String name) {
        return entries.containsKey(name);
    }

    public Entry entry(String name) {
        Entry e = entries.get(name);
        if (e == null) {
            throw new IllegalArgumentException(path.getFileName() + " has no tensor '" + name + "' (has " + entries.keySet() + ")");
        }
        return e;
    }

    /** The tensor's bytes: a read-only slice of the mapping, valid until {@link #close()}. */
    public MemorySegment bytes(String name) {
        Entry e = entry(name);
        return data.asSlice(e.begin(), e.end() - e.begin()).asReadOnly();
    }

    /** The values widened to float (BF16, F32; F64 narrowed; I32 converted). */
    public float[] floats(String name) {
        Entry e = entry(name);
        MemorySegment s = bytes(name);
        float[] out = new float[Math.toIntExact(e.numel())];
        for (int i = 0; i < out.length; i++) {
            out[i] = switch (e.dtype()) {
                case BF16 -> Float.intBitsToFloat((s.get(I16_LE, 2L * i) & 0xffff) << 16);
                case F32 -> s.get(F32_LE, 4L * i);
                case F64 -> (float) s.get(F64_LE, 8L * i);
                case I32 -> s.get(I32_LE, 4L * i);
            };
        }
        return out;
    }

    /** The values of an I32 tensor. */
    public int[] ints(String name) {
        Entry e = entry(name);
        if (e.dtype() != DType.I32) {
            throw new IllegalArgumentException(name + " is " + e.dtype() + ", not I32");
        }
        MemorySegment s = bytes(name);
        int[] out = new int[Math.toIntExact(e.numel())];
        for (int i = 0; i < out.length; i++) {
            out[i] = s.get(I32_LE, 4L * i);
        }
        return out;
    }

    /** Unmaps the file; slices handed out before become unusable. */
    @Override
    public void close() {
        if (arena.scope().isAlive()) {
            arena.close();
        }
    }
}
