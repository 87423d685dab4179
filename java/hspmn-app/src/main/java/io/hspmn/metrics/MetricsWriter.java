package io.hspmn.metrics;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * Appends one JSON line per step (see {@link StepMetrics}). Each line goes to the file in a single
 * write as soon as it is given, with no buffering in the JVM, so a run killed at any moment leaves
 * every line it completed, whole, in the file (the operating system keeps what was written even if
 * the process dies). Thread-safe.
 */
public final class MetricsWriter implements AutoCloseable {
    private final Path path;
    private final FileChannel out;

    private MetricsWriter(Path path, FileChannel out) {
        this.path = path;
        this.out = out;
    }

    /** A new run: creates {@code path}, or empties it. */
    public static MetricsWriter create(Path path) throws IOException {
        Objects.requireNonNull(path, "path");
        return new MetricsWriter(path, FileChannel.open(path, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.TRUNCATE_EXISTING));
    }

    /**
     * A resumed run: keeps the lines of steps up to {@code lastStep} (those the checkpoint covers)
     * and drops the rest, which the resumed run will write again, along with any partial or
     * unparseable line; then appends. The file is rewritten through a temporary file and a rename,
     * so a kill during the rewrite leaves the old file. A missing file is created.
     */
    public static MetricsWriter resume(Path path, long lastStep) throws IOException {
        Objects.requireNonNull(path, "path");
        if (Files.exists(path)) {
            StringBuilder kept = new StringBuilder();
            for (String line : Files.readAllLines(path, StandardCharsets.UTF_8)) {
                try {
                    if (StepMetrics.fromJson(line).step() <= lastStep) {
                        kept.append(line).append('\n');
                    }
                } catch (IllegalArgumentException partial) {
                    // a line the killed run did not finish, or not ours: nothing to keep
                }
            }
            Path tmp = path.resolveSibling(path.getFileName() + ".tmp");
            Files.writeString(tmp, kept, StandardCharsets.UTF_8);
            Files.move(tmp, path, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        }
        return new MetricsWriter(path, FileChannel.open(path, StandardOpenOption.CREATE, StandardOpenOption.WRITE,
                StandardOpenOption.APPEND));
    }

    public Path path() {
        return path;
    }

    /** Writes {@code m} as one line and hands it to the operating system before returning. */
    public synchronized void write(StepMetrics m) throws IOException {
        ByteBuffer line = ByteBuffer.wrap((m.toJson() + "\n").getBytes(StandardCharsets.UTF_8));
        while (line.hasRemaining()) {
            out.write(line);
        }
    }

    /** Forces the lines to the disk too, surviving a machine crash as well as a process kill (slow: use at checkpoints). */
    public synchronized void sync() throws IOException {
        out.force(false);
    }

    /** Reads every well-formed line of a metrics file, in file order; partial or foreign lines are skipped. */
    public static List<StepMetrics> read(Path path) throws IOException {
        List<StepMetrics> steps = new ArrayList<>();
        for (String line : Files.readAllLines(path, StandardCharsets.UTF_8)) {
            if (line.isBlank()) {
                continue;
            }
            try {
                steps.add(StepMetrics.fromJson(line));
            } catch (IllegalArgumentException skipped) {
                // see the method's contract
            }
        }
        return steps;
    }

    @Override
    public synchronized void close() throws IOException {
        out.close();
    }
}
