package io.hspmn.io;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.Map;
import java.util.Set;

/**
 * A read-only safetensors file, memory-mapped: 8-byte little-endian header length N, N bytes of JSON
 * header ({@code name -> {dtype, shape, data_offsets}} plus an optional {@code __metadata__} string map),
 * then the data. Everything in the header is validated before any tensor is handed out.
 */
public final class SafeTensors implements AutoCloseable {
    /** Headers past this are refused rather than parsed (the format's reference reader uses 100 MB). */
    public static final long MAX_HEADER_BYTES = SafeTensorsHeader.MAX_HEADER_BYTES;

    private static final ValueLayout.OfLong I64_LE = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfFloat F32_LE = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfDouble F64_LE = ValueLayout.JAVA_DOUBLE_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfInt I32_LE = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfShort I16_LE = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /** The dtypes this project reads and writes, with their element sizes. */
    public enum DType {
        BF16(2, true), F32(4, true), F64(8, true), I32(4, false), I64(8, false), U8(1, false);

        private final int byteSize;
        private final boolean floating;

        DType(int byteSize, boolean floating) {
            this.byteSize = byteSize;
            this.floating = floating;
        }

        public int byteSize() {
            return byteSize;
        }

        /** Whether values can be NaN or infinite (and so are checked for finiteness). */
        public boolean isFloating() {
            return floating;
        }

        /** The dtype spelled as in a header, or null: the format's names are case-sensitive. */
        public static DType parse(String s) {
            for (DType d : values()) {
                if (d.name().equals(s)) {
                    return d;
                }
            }
            return null;
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
            MemorySegment file = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(), arena);
            SafeTensorsHeader h;
            try {
                h = SafeTensorsHeader.parse(file);
            } catch (InvalidSafeTensorsException e) {
                throw new InvalidSafeTensorsException("invalid safetensors file " + path + ": " + e.getMessage());
            }
            return new SafeTensors(path, arena, file.asSlice(h.dataOffset()), h.entries(), h.metadata());
        } catch (IOException | RuntimeException e) {
            arena.close();
            throw e;
        }
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

    /** The values widened to float (BF16, F32; F64 narrowed; integers converted). */
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
                case I64 -> s.get(I64_LE, 8L * i);
                case U8 -> s.get(ValueLayout.JAVA_BYTE, i) & 0xff;
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

    /** The values of an I64 tensor. */
    public long[] longs(String name) {
        Entry e = entry(name);
        if (e.dtype() != DType.I64) {
            throw new IllegalArgumentException(name + " is " + e.dtype() + ", not I64");
        }
        MemorySegment s = bytes(name);
        long[] out = new long[Math.toIntExact(e.numel())];
        for (int i = 0; i < out.length; i++) {
            out[i] = s.get(I64_LE, 8L * i);
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
