package io.hspmn.train;

import io.hspmn.Communicator;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The multi-host rendezvous: node 0's id file, the others' wait for it, HSPMN_COMM_ID, and their errors. */
class RendezvousTest {
    @TempDir
    Path dir;

    static ParallelOptions node(int rank, Path file, int timeoutS) {
        return new ParallelOptions(1, 2, rank, "nccl", file, timeoutS, false, 0);
    }

    @Test
    void nodeZeroWritesTheIdAndTheOthersReadIt() throws Exception {
        Path file = dir.resolve("sub").resolve("comm.id");
        byte[] id0 = Rendezvous.id(node(0, file, 5), Communicator.Kind.LOCAL, Map.of(), System::currentTimeMillis);
        assertEquals(Communicator.ID_BYTES, id0.length);
        assertEquals(2 * Communicator.ID_BYTES, Files.readString(file).length(), "hex, nothing else");
        byte[] id1 = Rendezvous.id(node(1, file, 5), Communicator.Kind.LOCAL, Map.of(), System::currentTimeMillis);
        assertArrayEquals(id0, id1);
        try (var files = Files.list(file.getParent())) {
            assertEquals(1, files.count(), "no temporary file left beside it");
        }
        Rendezvous.spent(node(1, file, 5));
        assertTrue(Files.exists(file), "only node 0 retires the id");
        Rendezvous.spent(node(0, file, 5));
        assertFalse(Files.exists(file), "node 0 retires the id once every rank joined");
    }

    @Test
    void aMissingIdFileFailsAfterTheTimeoutNamingIt() {
        Path file = dir.resolve("never.id");
        AtomicLong now = new AtomicLong();
        // a clock that moves 1 s per look: the wait gives up after --comm-timeout without sleeping it out
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Rendezvous.id(node(1, file, 3),
                Communicator.Kind.NCCL, Map.of(), () -> now.getAndAdd(1000)));
        assertTrue(e.getMessage().contains("--comm-id-file " + file) && e.getMessage().contains("after 3 s")
                && e.getMessage().contains("node 0"), e.getMessage());
    }

    @Test
    void theEnvironmentOrAFileIsNeededAndMustHoldAnId() throws Exception {
        IllegalArgumentException none = assertThrows(IllegalArgumentException.class, () -> Rendezvous.id(node(1, null, 1),
                Communicator.Kind.NCCL, Map.of(), System::currentTimeMillis));
        assertTrue(none.getMessage().contains("--comm-id-file") && none.getMessage().contains(ParallelOptions.COMM_ID_ENV),
                none.getMessage());
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class, () -> Rendezvous.id(node(1, null, 1),
                Communicator.Kind.NCCL, Map.of(ParallelOptions.COMM_ID_ENV, "abc"), System::currentTimeMillis));
        assertTrue(bad.getMessage().startsWith(ParallelOptions.COMM_ID_ENV + ": a communicator id is 256 hex digits"),
                bad.getMessage());
        byte[] id = new byte[Communicator.ID_BYTES];
        id[0] = 7;
        id[127] = -1;
        assertArrayEquals(id, Rendezvous.id(node(1, null, 1), Communicator.Kind.NCCL,
                Map.of(ParallelOptions.COMM_ID_ENV, Communicator.idToHex(id)), System::currentTimeMillis));
        Path garbage = dir.resolve("garbage.id");
        Files.writeString(garbage, "not an id");
        IllegalArgumentException g = assertThrows(IllegalArgumentException.class, () -> Rendezvous.id(node(1, garbage, 1),
                Communicator.Kind.NCCL, Map.of(), System::currentTimeMillis));
        assertTrue(g.getMessage().contains("does not hold a rendezvous id"), g.getMessage());
    }
}
