package io.hspmn.train;

import io.hspmn.Communicator;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Map;
import java.util.function.LongSupplier;

/**
 * How the ranks of a run agree on one communicator id. One process: the id is made here and handed to
 * its rank threads. Several (--nodes M): {@value ParallelOptions#COMM_ID_ENV} (hex) when set on every
 * node, else --comm-id-file: node 0 makes the id and writes it (a temporary file moved into place, so a
 * reader never sees half of it), the others wait for the file up to --comm-timeout. Node 0 deletes the
 * file once every rank has joined, so a stale id never meets the next launch.
 */
final class Rendezvous {
    private Rendezvous() {
    }

    /**
     * The id of this run's communicator.
     *
     * @param env   the environment (System.getenv() outside tests)
     * @param clock milliseconds, for the wait
     * @throws IllegalArgumentException no way to agree (several nodes, no file, no variable), a bad id, or
     *                                  node 0's file did not appear in time
     */
    static byte[] id(ParallelOptions p, Communicator.Kind kind, Map<String, String> env, LongSupplier clock)
            throws IOException, InterruptedException {
        if (p.nodes() == 1) {
            return Communicator.uniqueId(kind);
        }
        String hex = env.get(ParallelOptions.COMM_ID_ENV);
        if (hex != null && !hex.isBlank()) {
            try {
                return Communicator.idFromHex(hex);
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(ParallelOptions.COMM_ID_ENV + ": " + e.getMessage());
            }
        }
        Path file = p.commIdFile();
        if (file == null) {
            throw new IllegalArgumentException("--nodes " + p.nodes() + " needs --comm-id-file PATH (on a file system "
                    + "every node sees; node 0 writes the id there) or " + ParallelOptions.COMM_ID_ENV + " (the same hex "
                    + "id on every node)");
        }
        if (p.nodeRank() == 0) {
            byte[] id = Communicator.uniqueId(kind);
            write(file, Communicator.idToHex(id));
            return id;
        }
        long deadline = clock.getAsLong() + p.commTimeoutS() * 1000L;
        while (!Files.isRegularFile(file)) {
            if (clock.getAsLong() >= deadline) {
                throw new IllegalArgumentException("--comm-id-file " + file + ": no rendezvous id after " + p.commTimeoutS()
                        + " s (--comm-timeout); start node 0 with the same --comm-id-file, on a file system both nodes see");
            }
            Thread.sleep(50);
        }
        try {
            return Communicator.idFromHex(Files.readString(file, StandardCharsets.US_ASCII));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--comm-id-file " + file + " does not hold a rendezvous id: " + e.getMessage());
        }
    }

    /** Node 0, once every rank joined: the id is spent, so the next launch must not find it. */
    static void spent(ParallelOptions p) throws IOException {
        if (p.nodes() > 1 && p.nodeRank() == 0 && p.commIdFile() != null) {
            Files.deleteIfExists(p.commIdFile());
        }
    }

    private static void write(Path file, String text) throws IOException {
        Path abs = file.toAbsolutePath();
        Files.createDirectories(abs.getParent());
        Path tmp = Files.createTempFile(abs.getParent(), abs.getFileName().toString(), ".tmp");
        try {
            Files.writeString(tmp, text, StandardCharsets.US_ASCII);
            try {
                Files.move(tmp, abs, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, abs, StandardCopyOption.REPLACE_EXISTING);
            }
        } finally {
            Files.deleteIfExists(tmp);
        }
    }
}
