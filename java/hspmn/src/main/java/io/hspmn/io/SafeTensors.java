package io.hspmn.io;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
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

    /** The tensor's dtype, shape and bytes (a slice of the mapping, valid until {@link #close()}). */
    public TensorData tensor(String name) {
        Entry e = entry(name);
        return new TensorData(e.dtype(), e.shape(), bytes(name));
    }

    /** The values widened to float (BF16, F32; F64 narrowed; integers converted, I64 through double). */
    public float[] floats(String name) {
        TensorData t = tensor(name);
        float[] out = new float[Math.toIntExact(t.numel())];
        for (int i = 0; i < out.length; i++) {
            out[i] = (float) t.get(i);
        }
        return out;
    }

    /** The values of an I32 tensor. */
    public int[] ints(String name) {
        return typed(name, DType.I32).toArray(TensorData.I32_LE);
    }

    /** The values of an I64 tensor. */
    public long[] longs(String name) {
        return typed(name, DType.I64).toArray(TensorData.I64_LE);
    }

    private MemorySegment typed(String name, DType want) {
        DType got = entry(name).dtype();
        if (got != want) {
            throw new IllegalArgumentException(name + " is " + got + ", not " + want);
        }
        return bytes(name);
    }

    /** Unmaps the file; slices handed out before become unusable. */
    @Override
    public void close() {
        if (arena.scope().isAlive()) {
            arena.close();
        }
    }
}
