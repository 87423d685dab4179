package io.hspmn.io;

import com.google.gson.Gson;
import com.google.gson.JsonArray;
import com.google.gson.JsonObject;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;
import java.util.Set;

/**
 * Writes a safetensors file atomically: everything goes to a temp file in the target's directory,
 * which is fsynced and then renamed over the target, so a crash or an error at any point leaves
 * either the old file or the new one, never a mix. A process killed mid-write leaves its temp file;
 * the next write of the same target deletes it ({@link #removeOrphans}). Tensors are laid out in insertion order, back to
 * back; the header is padded with spaces (which the format allows) so the data starts 8-byte aligned.
 */
public final class SafeTensorsWriter {
    /** Called as data is written (after the header, then after every chunk); tests inject failures here. */
    @FunctionalInterface
    public interface Progress {
        void written(long dataBytesSoFar, long dataBytesTotal) throws IOException;
    }

    private static final int CHUNK = 1 << 20;
    private static final Gson GSON = new Gson();

    private final Map<String, String> metadata = new LinkedHashMap<>();
    private final Map<String, TensorData> tensors = new LinkedHashMap<>();
    private Progress progress = (a, b) -> { };

    public SafeTensorsWriter metadata(String key, String value) {
        metadata.put(Objects.requireNonNull(key), Objects.requireNonNull(value));
        return this;
    }

    public SafeTensorsWriter metadata(Map<String, String> m) {
        m.forEach(this::metadata);
        return this;
    }

    public SafeTensorsWriter add(String name, TensorData t) {
        if (name.isEmpty() || name.equals("__metadata__")) {
            throw new IllegalArgumentException("tensor name " + SafeTensorsHeader.quote(name) + " is reserved");
        }
        if (tensors.putIfAbsent(name, Objects.requireNonNull(t)) != null) {
            throw new IllegalArgumentException("tensor " + SafeTensorsHeader.quote(name) + " added twice");
        }
        return this;
    }

    public SafeTensorsWriter progress(Progress p) {
        progress = Objects.requireNonNull(p);
        return this;
    }

    /** The header bytes, space-padded to a multiple of 8, as they will be written. */
    byte[] header() {
        JsonObject root = new JsonObject();
        if (!metadata.isEmpty()) {
            JsonObject m = new JsonObject();
            metadata.forEach(m::addProperty);
            root.add("__metadata__", m);
        }
        long at = 0;
        for (Map.Entry<String, TensorData> e : tensors.entrySet()) {
            TensorData t = e.getValue();
            JsonObject o = new JsonObject();
            o.addProperty("dtype", t.dtype().name());
            JsonArray shape = new JsonArray();
            for (long d : t.shape()) {
                shape.add(d);
            }
            o.add("shape", shape);
            JsonArray off = new JsonArray();
            off.add(at);
            at = Math.addExact(at, t.bytes().byteSize());
            off.add(at);
            o.add("data_offsets", off);
            root.add(e.getKey(), o);
        }
        byte[] json = GSON.toJson(root).getBytes(StandardCharsets.UTF_8);
        int padded = (json.length + 7) & ~7;
        if (padded > SafeTensorsHeader.MAX_HEADER_BYTES) {
            throw new IllegalArgumentException("header would be " + padded + " bytes, over the readers' limit");
        }
        byte[] out = new byte[padded];
        System.arraycopy(json, 0, out, 0, json.length);
        java.util.Arrays.fill(out, json.length, padded, (byte) ' ');
        return out;
    }

    /** Writes to {@code target} atomically; on any failure the previous file is untouched and no temp file is left. */
    public void write(Path target) throws IOException {
        Path abs = target.toAbsolutePath();
        Path dir = abs.getParent();
        byte[] header = header();
        long total = 0;
        for (TensorData t : tensors.values()) {
            total += t.bytes().byteSize();
        }
        removeOrphans(abs);
        // The writer's pid in the name lets a later save tell an orphan (its process is gone) from a save in progress.
        Path tmp = Files.createTempFile(dir, tempPrefix(abs) + ProcessHandle.current().pid() + ".", ".tmp");
        boolean done = false;
        try {
            keepPermissions(abs, tmp);
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
                ByteBuffer len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(header.length).flip();
                writeFully(ch, len);
                writeFully(ch, ByteBuffer.wrap(header));
                progress.written(0, total);
                ByteBuffer buf = ByteBuffer.allocateDirect((int) Math.min(CHUNK, Math.max(total, 1)));
                MemorySegment bufSeg = MemorySegment.ofBuffer(buf);
                long written = 0;
                for (TensorData t : tensors.values()) {
                    MemorySegment src = t.bytes();
                    for (long off = 0; off < src.byteSize(); ) {
                        int n = (int) Math.min(buf.capacity(), src.byteSize() - off);
                        // Copied through a direct buffer: heap segments over non-byte arrays have no ByteBuffer view.
                        MemorySegment.copy(src, off, bufSeg, 0, n);
                        buf.clear().limit(n);
                        writeFully(ch, buf);
                        off += n;
                        written += n;
                        progress.written(written, total);
                    }
                }
                ch.force(true);
            }
            try {
                Files.move(tmp, abs, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                throw new IOException("cannot replace " + abs + " atomically (file system without atomic rename)", e);
            }
            done = true;
            syncDirectory(dir);
        } catch (IOException | RuntimeException | Error e) {
            if (!done) {
                try {
                    Files.deleteIfExists(tmp);
                } catch (IOException cleanup) {
                    e.addSuppressed(cleanup);
                }
            }
            throw e;
        }
    }

    /** Temporary files of {@code target} are named {@code .<name>.<pid>.<random>.tmp} beside it. */
    private static String tempPrefix(Path target) {
        return "." + target.getFileName() + ".";
    }

    /** A save abandoned this long ago (by a writer that named no pid) is an orphan: a live save touches its file. */
    static final long ORPHAN_AGE_MILLIS = 10 * 60 * 1000L;

    /**
     * Deletes the temporary files that saves of {@code target} left behind when their process was killed
     * mid-write ({@code .<name>.<pid>.<random>.tmp}, 46 MB each for a small model): those whose pid is no
     * longer running, and those of the older naming without a pid that nobody has written to for
     * {@value #ORPHAN_AGE_MILLIS} ms. Saves in progress, in this process or a live one, are left alone.
     * Called before every {@link #write}; returns how many files it deleted.
     */
    public static int removeOrphans(Path target) throws IOException {
        Path abs = target.toAbsolutePath();
        Path dir = abs.getParent();
        String prefix = tempPrefix(abs);
        if (dir == null || !Files.isDirectory(dir)) {
            return 0;
        }
        long self = ProcessHandle.current().pid();
        int removed = 0;
        try (var entries = Files.newDirectoryStream(dir, p -> {
            String n = p.getFileName().toString();
            return n.startsWith(prefix) && n.endsWith(".tmp");
        })) {
            for (Path p : entries) {
                String middle = p.getFileName().toString();
                middle = middle.substring(prefix.length(), middle.length() - ".tmp".length());
                int dot = middle.indexOf('.');
                boolean orphan;
                if (dot > 0 && dot <= 18 && middle.substring(0, dot).chars().allMatch(Character::isDigit)) {
                    long pid = Long.parseLong(middle.substring(0, dot));
                    orphan = pid != self && ProcessHandle.of(pid).map(h -> !h.isAlive()).orElse(true);
                } else {
                    orphan = System.currentTimeMillis() - Files.getLastModifiedTime(p).toMillis() > ORPHAN_AGE_MILLIS;
                }
                if (orphan && Files.deleteIfExists(p)) {
                    removed++;
                }
            }
        }
        return removed;
    }

    /**
     * createTempFile makes the file owner-only (0600); a checkpoint should keep the permissions of the
     * one it replaces, or get the usual rw-r--r-- when new. Non-POSIX file systems keep their defaults.
     */
    private static void keepPermissions(Path target, Path tmp) throws IOException {
        try {
            Set<PosixFilePermission> perms = Files.exists(target)
                    ? Files.getPosixFilePermissions(target)
                    : PosixFilePermissions.fromString("rw-r--r--");
            Files.setPosixFilePermissions(tmp, perms);
        } catch (UnsupportedOperationException e) {
            // Not a POSIX file system: nothing to copy.
        }
    }

    private static void writeFully(FileChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    /** Makes the rename itself durable; some platforms cannot open a directory, and then the rename stands unsynced. */
    private static void syncDirectory(Path dir) {
        try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
            d.force(true);
        } catch (IOException | UnsupportedOperationException e) {
            // Best effort by design: the data itself is already fsynced.
        }
    }
}
