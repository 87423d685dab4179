package io.hspmn.data;

import java.io.IOException;
import java.nio.file.Path;

/** A corpus that cannot be trained on: empty, unreadable or binary. Names the file and, where one applies, the byte offset. */
public final class CorpusException extends IOException {
    private final Path path;
    private final long offset;

    CorpusException(Path path, long offset, String message, Throwable cause) {
        super(message, cause);
        this.path = path;
        this.offset = offset;
    }

    CorpusException(Path path, long offset, String message) {
        this(path, offset, message, null);
    }

    /** The file or folder at fault. */
    public Path path() {
        return path;
    }

    /** Byte offset of the first offending byte in {@link #path()}, or -1 where the fault is not at a byte. */
    public long offset() {
        return offset;
    }
}
