package io.hspmn;

import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.IntFunction;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The Java side of hspmn_comm: LOCAL ranks as threads, all-reduce, abort from any thread, and the checks before the library. */
class CommunicatorTest {
    /** Runs {@code rank} on {@code world} threads at once; their results by rank. */
    static <T> List<T> onThreads(int world, IntFunction<T> rank) throws Exception {
        List<CompletableFuture<T>> f = new ArrayList<>();
        for (int r = 0; r < world; r++) {
            int k = r;
            f.add(CompletableFuture.supplyAsync(() -> rank.apply(k), c -> Thread.ofPlatform().start(c)));
        }
        List<T> out = new ArrayList<>();
        for (CompletableFuture<T> x : f) {
            out.add(x.get(60, TimeUnit.SECONDS));
        }
        return out;
    }

    static Context cpu() {
        return Context.create(ContextOptions.defaults().withBackend(Backend.CPU).withNumThreads(1));
    }

    @Test
    void localRanksSumAndAverageAlike() throws Exception {
        assertTrue(Communicator.available(Communicator.Kind.LOCAL));
        byte[] id = Communicator.uniqueId(Communicator.Kind.LOCAL);
        List<float[]> got = onThreads(3, r -> {
            try (Context ctx = cpu();
                 Communicator c = Communicator.create(ctx, new Communicator.Params(Communicator.Kind.LOCAL, r, 3, 10_000, id))) {
                assertEquals(r, c.rank());
                assertEquals(3, c.world());
                float[] sum = {r, 10f * r, 0.5f};
                c.allReduce(sum, false);
                float[] mean = {r, 1f};
                c.allReduce(mean, true);
                return new float[] {sum[0], sum[1], sum[2], mean[0], mean[1]};
            }
        });
        for (float[] g : got) {
            assertArrayEquals(new float[] {3f, 30f, 1.5f, 1f, 1f}, g);
        }
    }

    @Test
    void abortFromAnotherThreadFailsEveryRanksPendingCollective() throws Exception {
        byte[] id = Communicator.uniqueId(Communicator.Kind.LOCAL);
        Communicator[] comms = new Communicator[2];
        CountDownLatch joined = new CountDownLatch(2);
        CompletableFuture<List<Throwable>> ranks = CompletableFuture.supplyAsync(() -> {
            try {
                return onThreads(2, r -> {
                    try (Context ctx = cpu()) {
                        comms[r] = Communicator.create(ctx, new Communicator.Params(Communicator.Kind.LOCAL, r, 2, 60_000, id));
                        joined.countDown();
                        if (r == 1) {
                            return null;  // rank 1 never reduces: rank 0 waits until the abort
                        }
                        try {
                            comms[r].allReduce(new float[] {1f}, false);
                            return null;
                        } catch (RuntimeException e) {
                            return e;
                        }
                    }
                });
            } catch (Exception e) {
                throw new IllegalStateException(e);
            }
        });
        assertTrue(joined.await(30, TimeUnit.SECONDS));
        Thread.sleep(200);  // rank 0 is inside its all-reduce, holding its context's lock
        long t0 = System.nanoTime();
        comms[0].abort();  // this thread: no context lock taken
        List<Throwable> errors = ranks.get(30, TimeUnit.SECONDS);
        assertTrue((System.nanoTime() - t0) / 1e9 < 10, "the abort, not the 60 s timeout, ended the wait");
        CommunicatorException e = assertInstanceOf(CommunicatorException.class, errors.get(0));
        assertEquals(Status.COMM, e.status());
        assertTrue(comms[0].isClosed(), "closing the context closed its communicator");
        comms[0].abort();  // closed: a no-op, never the freed handle
    }

    @Test
    void badParamsAreRefusedBeforeTheLibrary() throws Exception {
        byte[] id = new byte[Communicator.ID_BYTES];
        assertThrows(IllegalArgumentException.class, () -> new Communicator.Params(Communicator.Kind.LOCAL, 2, 2, 0, id));
        assertThrows(IllegalArgumentException.class, () -> new Communicator.Params(Communicator.Kind.LOCAL, 0, 0, 0, id));
        assertThrows(IllegalArgumentException.class, () -> new Communicator.Params(Communicator.Kind.LOCAL, 0, 1, -1, id));
        assertThrows(IllegalArgumentException.class, () -> new Communicator.Params(Communicator.Kind.LOCAL, 0, 1, 0, new byte[3]));
        IllegalArgumentException hex = assertThrows(IllegalArgumentException.class, () -> Communicator.idFromHex("zz"));
        assertTrue(hex.getMessage().contains("256 hex digits"), hex.getMessage());
        byte[] back = Communicator.idFromHex(Communicator.idToHex(Communicator.uniqueId(Communicator.Kind.LOCAL)));
        assertEquals(Communicator.ID_BYTES, back.length);
        assertEquals(Communicator.Kind.NCCL, Communicator.Kind.parse(" Nccl "));
        // the mirror of hspmn_comm_kind (NativeEnumTest's prefix scan would take HSPMN_COMM_ID_BYTES for a kind)
        assertEquals(io.hspmn.ffi.hspmn_h.HSPMN_COMM_LOCAL(), Communicator.Kind.LOCAL.code());
        assertEquals(io.hspmn.ffi.hspmn_h.HSPMN_COMM_NCCL(), Communicator.Kind.NCCL.code());
        assertEquals(2, Communicator.Kind.values().length);
        assertEquals(io.hspmn.ffi.hspmn_h.HSPMN_COMM_ID_BYTES(), Communicator.ID_BYTES);
        assertThrows(IllegalArgumentException.class, () -> Communicator.Kind.parse("mpi"));
        if (!Hspmn.backendBuilt(Backend.CUDA)) {
            assertTrue(!Communicator.available(Communicator.Kind.NCCL));
            assertTrue(!Communicator.unavailableReason(Communicator.Kind.NCCL).isEmpty());
        }
    }

    @Test
    void aModelTakesOnlyACommunicatorOfItsOwnContext() throws Exception {
        byte[] id = Communicator.uniqueId(Communicator.Kind.LOCAL);
        try (Context a = cpu(); Context b = cpu();
             Communicator c = Communicator.create(b, new Communicator.Params(Communicator.Kind.LOCAL, 0, 1, 0, id))) {
            LanguageModel m = LanguageModel.create(a, LanguageModelTest.CONFIG, 1);
            InvalidArgumentException e = assertThrows(InvalidArgumentException.class, () -> m.setCommunicator(c, 0, false));
            assertTrue(e.getMessage().contains("another context"), e.getMessage());
            assertThrows(InvalidArgumentException.class, () -> m.setCommunicator(null, -1, false));
            LanguageModel n = LanguageModel.create(b, LanguageModelTest.CONFIG, 1);
            n.setCommunicator(c, 1 << 20, true);
            assertEquals(c, n.communicator());
            HspmnStateException busy = assertThrows(HspmnStateException.class, c::close);
            assertTrue(busy.getMessage().contains("hspmn_comm_destroy"), busy.getMessage());
            n.setCommunicator(null, 0, false);
            c.close();
            assertTrue(c.isClosed());
        }
    }
}
