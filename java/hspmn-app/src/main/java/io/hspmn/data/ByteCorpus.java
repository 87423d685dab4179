package io.hspmn.data;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Objects;
import java.util.stream.Stream;

/**
 * A byte-level text corpus: one UTF-8 file, or every non-hidden file under a folder (recursively,
 * sorted by path so every machine sees the same order). Each file is memory-mapped read-only; the
 * mappings live until {@link #close()}, after which every segment handed out throws on access.
 *
 * <p>Refused, with a {@link CorpusException} naming the path: no bytes at all (an empty file, a folder
 * with none or only empty files), a file that cannot be read, and binary files (see {@link Utf8Check}:
 * a NUL byte, or more invalid UTF-8 than a stray byte per thousand), with the offending offset.
 * Empty files inside a non-empty folder are skipped: they hold nothing to train on. Hidden files and
 * folders (name starting with '.') are skipped, so a corpus can live in a git checkout. Symbolic links
 * to files are followed; links to folders are not (a link cycle cannot trap the walk), and a broken
 * link is an unreadable file.
 */
public final class ByteCorpus implements AutoCloseable {
    /** One mapped file. */
    public record Document(Path path, MemorySegment bytes) {
        public long size() {
            return bytes.byteSize();
        }
    }

    private final Path root;
    private final Arena arena;
    private final List<Document> documents;
    private final long totalBytes;

    private ByteCorpus(Path root, Arena arena, List<Document> documents) {
        this.root = root;
        this.arena = arena;
        this.documents = Collections.unmodifiableList(documents);
        long t = 0;
        for (Document d : documents) {
            t += d.size();
        }
        this.totalBytes = t;
    }

    /** Maps and validates {@code path}, a UTF-8 file or a folder of them. */
    public static ByteCorpus open(Path path) throws CorpusException {
        Objects.requireNonNull(path, "path");
        List<Path> files = listFiles(path);
        Arena arena = Arena.ofShared();
        try {
            List<Document> docs = new ArrayList<>();
            for (Path f : files) {
                MemorySegment m = map(f, arena);
                if (m.byteSize() == 0) {
                    continue;
                }
                check(f, m);
                docs.add(new Document(f, m));
            }
            if (docs.isEmpty()) {
                throw new CorpusException(path, -1, files.size() <= 1 && !Files.isDirectory(path)
                        ? "corpus file " + path + " is empty: there are no bytes to train on"
                        : "corpus folder " + path + " is empty: no non-hidden file in it has any bytes");
            }
            return new ByteCorpus(path, arena, docs);
        } catch (CorpusException | RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private static List<Path> listFiles(Path path) throws CorpusException {
        if (!Files.exists(path, LinkOption.NOFOLLOW_LINKS)) {
            throw new CorpusException(path, -1, "corpus path " + path + " does not exist");
        }
        if (!Files.isDirectory(path)) {
            return List.of(path);
        }
        List<Path> files = new ArrayList<>();
        try (Stream<Path> walk = Files.walk(path)) {
            walk.filter(p -> !p.equals(path) && !isHiddenBelow(path, p))
                    .filter(p -> !Files.isDirectory(p))
                    .forEach(files::add);
        } catch (UncheckedIOException e) {
            throw unreadable(path, e.getCause());
        } catch (IOException e) {
            throw unreadable(path, e);
        }
        Collections.sort(files); // Path order is lexicographic on the name elements: the same on every machine
        return files;
    }

    private static boolean isHiddenBelow(Path root, Path p) {
        for (Path part : root.relativize(p)) {
            if (part.toString().startsWith(".")) {
                return true;
            }
        }
        return false;
    }

    private static MemorySegment map(Path f, Arena arena) throws CorpusException {
        if (!Files.isRegularFile(f)) {
            String what = Files.isSymbolicLink(f) && !Files.exists(f) ? "a broken symbolic link" : "not a regular file";
            throw new CorpusException(f, -1, "cannot read corpus file " + f + ": " + what);
        }
        try (FileChannel ch = FileChannel.open(f, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size == 0) {
                return MemorySegment.NULL.reinterpret(0);
            }
            return ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
        } catch (NoSuchFileException e) {
            throw new CorpusException(f, -1, "cannot read corpus file " + f + ": it disappeared while opening", e);
        } catch (IOException e) {
            throw unreadable(f, e);
        }
    }

    private static CorpusException unreadable(Path f, Throwable e) {
        String why = e.getClass().getSimpleName() + (e.getMessage() == null ? "" : ": " + e.getMessage());
        return new CorpusException(f, -1, "cannot read corpus file " + f + " (" + why + ")", e);
    }

    private static void check(Path f, MemorySegment m) throws CorpusException {
        Utf8Check.Result r = Utf8Check.scan(m);
        if (r.nulAt() >= 0) {
            throw new CorpusException(f, r.nulAt(), "corpus file " + f + " looks binary, not UTF-8 text: NUL byte at offset " + r.nulAt());
        }
        long allowed = Utf8Check.tolerated(m.byteSize());
        if (r.invalid() > allowed) {
            throw new CorpusException(f, r.firstInvalid(), "corpus file " + f + " is not UTF-8 text: " + r.invalid()
                    + " invalid UTF-8 sequences in " + m.byteSize() + " bytes (at most " + allowed
                    + " tolerated), the first at offset " + r.firstInvalid());
        }
    }

    /** The file or folder this corpus was opened from. */
    public Path root() {
        return root;
    }

    /** The non-empty files, in path order. */
    public List<Document> documents() {
        return documents;
    }

    public long totalBytes() {
        return totalBytes;
    }

    /**
     * Splits every document by byte range: of its n bytes the first floor(n * (1 - validationFraction))
     * go to training and the rest (the cut moved forward to the next UTF-8 character start) to
     * validation. With 0.1 this is the conventional split of nanoGPT's {@code prepare.py}
     * ({@code train = data[:int(n*0.9)]}), so figures on tiny Shakespeare compare. Byte ranges rather
     * than whole documents, so a single-file corpus splits too and validation draws on every
     * document; the two never share a byte. Deterministic: it depends on the files alone.
     *
     * @param validationFraction in [0, 1); 0 leaves validation empty
     */
    public Splits split(double validationFraction) {
        if (!(validationFraction >= 0 && validationFraction < 1)) {
            throw new IllegalArgumentException("validationFraction must be in [0, 1), got " + validationFraction);
        }
        List<MemorySegment> train = new ArrayList<>();
        List<MemorySegment> val = new ArrayList<>();
        for (Document d : documents) {
            MemorySegment b = d.bytes();
            long n = b.byteSize();
            long cut = (long) Math.floor(n * (1.0 - validationFraction));
            while (cut < n && (b.get(ValueLayout.JAVA_BYTE, cut) & 0xC0) == 0x80) {
                cut++; // a continuation byte: start validation on a whole character
            }
            if (cut > 0) {
                train.add(b.asSlice(0, cut));
            }
            if (cut < n) {
                val.add(b.asSlice(cut));
            }
        }
        return new Splits(new CorpusSplit("train", train), new CorpusSplit("validation", val));
    }

    /** The training and validation halves of a {@link #split(double)}. */
    public record Splits(CorpusSplit train, CorpusSplit validation) {
    }

    /** Unmaps every file; segments handed out earlier throw IllegalStateException afterwards. Idempotent. */
    @Override
    public void close() {
        if (arena.scope().isAlive()) {
            arena.close();
        }
    }

    @Override
    public String toString() {
        return "ByteCorpus[" + root + ", " + documents.size() + " documents, " + totalBytes + " bytes]";
    }
}
