package io.hspmn.data;

import com.google.gson.Gson;
import io.hspmn.Backend;
import io.hspmn.Context;
import io.hspmn.DType;
import io.hspmn.Tensor;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Random;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class BatchSamplerTest {
    @TempDir
    Path dir;
    ByteCorpus corpus;
    CorpusSplit train;
    byte[] stream; // the training split's bytes, for checking windows against

    @BeforeEach
    void setUp() throws IOException {
        // Three documents of printable pseudo-random text, so any window identifies its offset.
        Random r = new Random(42);
        for (int d = 0; d < 3; d++) {
            byte[] b = new byte[1000 + 337 * d];
            for (int i = 0; i < b.length; i++) {
                b[i] = (byte) (' ' + r.nextInt(95));
            }
            Files.write(dir.resolve("doc" + d + ".txt"), b);
        }
        corpus = ByteCorpus.open(dir);
        train = corpus.split(0.1).train();
        stream = new byte[(int) train.size()];
        train.copy(0, stream, 0, stream.length);
    }

    @AfterEach
    void tearDown() {
        corpus.close();
    }

    /** Stream offset of a window (rows of the batch), checking it really is a contiguous run of the stream. */
    private long offsetOf(int[] batch, int row, int w) {
        byte[] win = new byte[w];
        for (int t = 0; t < w; t++) {
            int v = batch[row * w + t];
            assertTrue(v >= 0 && v < 256);
            win[t] = (byte) v;
        }
        String s = new String(stream, StandardCharsets.ISO_8859_1);
        int at = s.indexOf(new String(win, StandardCharsets.ISO_8859_1));
        assertTrue(at >= 0, "window " + row + " is not a run of the split's bytes");
        return at;
    }

    @Test
    void windowsAreRunsOfTheSplitWithNextByteTargets() {
        int batch = 4;
        int seq = 32;
        BatchSampler s = BatchSampler.shuffled(train, batch, seq, 1);
        for (int k = 0; k < 10; k++) {
            int[] b = s.next();
            assertEquals(batch * (seq + 1), b.length);
            for (int row = 0; row < batch; row++) {
                long at = offsetOf(b, row, seq + 1);
                assertTrue(at + seq + 1 <= stream.length);
            }
        }
    }

    @Test
    void anEpochVisitsEveryWindowOnceThenReshuffles() {
        int seq = 50;
        BatchSampler s = BatchSampler.shuffled(train, 1, seq, 7);
        long n0 = s.windowsInEpoch(0);
        Set<Long> starts = new HashSet<>();
        List<Long> order0 = new ArrayList<>();
        for (long i = 0; i < n0; i++) {
            assertEquals(0, s.state().epoch());
            long at = offsetOf(s.next(), 0, seq + 1);
            assertTrue(starts.add(at), "window at " + at + " drawn twice in one epoch");
            order0.add(at);
        }
        assertEquals(1, s.state().epoch(), "the epoch ends after its last window");
        assertEquals(0, s.state().index());
        long phase = order0.stream().mapToLong(a -> a % seq).distinct().count();
        assertEquals(1, phase, "one phase per epoch: windows tile the stream with stride S");
        long p = order0.get(0) % seq;
        assertEquals((stream.length - 1 - p) / seq, n0);
        assertFalse(order0.equals(order0.stream().sorted().toList()), "shuffled, not in stream order");

        List<Long> order1 = new ArrayList<>();
        for (long i = 0; i < s.windowsInEpoch(1); i++) {
            order1.add(offsetOf(s.next(), 0, seq + 1));
        }
        assertFalse(order0.equals(order1), "epoch 1 is cut or ordered differently");
    }

    @Test
    void theSeedDecidesEverything() {
        int[] a = BatchSampler.shuffled(train, 8, 16, 123).next();
        int[] b = BatchSampler.shuffled(train, 8, 16, 123).next();
        int[] c = BatchSampler.shuffled(train, 8, 16, 124).next();
        assertArrayEquals(a, b);
        assertFalse(Arrays.equals(a, c));
    }

    @Test
    void nStepsStraightEqualHalfSaveRestoreHalf() {
        int steps = 40; // 40 * 5 windows of 64: several epochs of a ~3.4 KB split
        BatchSampler straight = BatchSampler.shuffled(train, 5, 64, 99);
        List<int[]> expected = new ArrayList<>();
        for (int i = 0; i < steps; i++) {
            expected.add(straight.next());
        }
        assertTrue(straight.state().epoch() >= 3, "the run crosses epoch boundaries");

        BatchSampler first = BatchSampler.shuffled(train, 5, 64, 99);
        for (int i = 0; i < steps / 2; i++) {
            assertArrayEquals(expected.get(i), first.next());
        }
        // Through JSON, as a checkpoint stores it.
        Gson gson = new Gson();
        String json = gson.toJson(first.state());
        SamplerState back = gson.fromJson(json, SamplerState.class);
        assertEquals(first.state(), back);

        BatchSampler resumed = BatchSampler.shuffled(train, 5, 64, 99);
        resumed.restore(back);
        for (int i = steps / 2; i < steps; i++) {
            assertArrayEquals(expected.get(i), resumed.next(), "step " + i);
        }
        assertEquals(straight.state(), resumed.state());
    }

    @Test
    void restoreRefusesAForeignState() {
        BatchSampler s = BatchSampler.shuffled(train, 4, 32, 5);
        s.next();
        SamplerState st = s.state();
        assertThrows(IllegalArgumentException.class, () -> BatchSampler.shuffled(train, 4, 32, 6).restore(st));
        assertThrows(IllegalArgumentException.class, () -> BatchSampler.shuffled(train, 4, 33, 5).restore(st));
        assertThrows(IllegalArgumentException.class, () -> BatchSampler.shuffled(train, 3, 32, 5).restore(st));
        assertThrows(IllegalArgumentException.class, () -> BatchSampler.sequential(train, 4, 32).restore(st));
        CorpusSplit other = corpus.split(0.2).train();
        assertThrows(IllegalArgumentException.class, () -> BatchSampler.shuffled(other, 4, 32, 5).restore(st));
        SamplerState past = new SamplerState(5, true, 4, 32, train.size(), 0, s.windowsInEpoch(0));
        assertThrows(IllegalArgumentException.class, () -> s.restore(past));
        SamplerState negative = new SamplerState(5, true, 4, 32, train.size(), -1, 0);
        assertThrows(IllegalArgumentException.class, () -> s.restore(negative));
    }

    @Test
    void sequentialReadsTheStreamInOrderEveryTime() {
        int seq = 100;
        BatchSampler v = BatchSampler.sequential(train, 3, seq);
        int[] b = v.next();
        for (int row = 0; row < 3; row++) {
            for (int t = 0; t <= seq; t++) {
                assertEquals(stream[row * seq + t] & 0xFF, b[row * (seq + 1) + t]);
            }
        }
        v.reset();
        assertArrayEquals(b, v.next());
        long n = v.windowsInEpoch(0);
        assertEquals(n, v.windowsInEpoch(5));
        v.reset();
        for (long i = 0; i < n; i += 3) {
            v.next();
        }
        assertEquals(1, v.state().epoch());
    }

    @Test
    void writesTheSameIntoASegmentAndATensor() {
        int[] expected = BatchSampler.shuffled(train, 2, 16, 3).next();
        try (Arena a = Arena.ofConfined()) {
            MemorySegment seg = a.allocate(ValueLayout.JAVA_INT, expected.length);
            BatchSampler.shuffled(train, 2, 16, 3).next(seg);
            assertArrayEquals(expected, seg.toArray(ValueLayout.JAVA_INT));
            MemorySegment small = a.allocate(ValueLayout.JAVA_INT, expected.length - 1);
            assertThrows(IllegalArgumentException.class, () -> BatchSampler.shuffled(train, 2, 16, 3).next(small));
        }
        assertThrows(IllegalArgumentException.class, () -> BatchSampler.shuffled(train, 2, 16, 3).next(new int[3]));
        try (Context ctx = Context.create(Backend.CPU);
             Tensor t = Tensor.create(ctx, DType.I32, 2, 17);
             Tensor wrong = Tensor.create(ctx, DType.I32, 2, 16)) {
            BatchSampler.shuffled(train, 2, 16, 3).next(t);
            assertArrayEquals(expected, t.toIntArray());
            assertThrows(IllegalArgumentException.class, () -> BatchSampler.shuffled(train, 2, 16, 3).next(wrong));
        }
    }

    @Test
    void splitsWindowsIntoTokensAndNextByteTargets() {
        int b = 3;
        int s = 16;
        BatchSampler rows = BatchSampler.shuffled(train, b, s, 5);
        BatchSampler pairs = BatchSampler.shuffled(train, b, s, 5);
        try (Arena a = Arena.ofConfined()) {
            MemorySegment tok = a.allocate(ValueLayout.JAVA_INT, (long) b * s);
            MemorySegment tgt = a.allocate(ValueLayout.JAVA_INT, (long) b * s);
            for (int batch = 0; batch < 40; batch++) { // past an epoch's end
                int[] w = rows.next();
                pairs.next(tok, tgt);
                for (int r = 0; r < b; r++) {
                    for (int t = 0; t < s; t++) {
                        assertEquals(w[r * (s + 1) + t], tok.getAtIndex(ValueLayout.JAVA_INT, (long) r * s + t));
                        assertEquals(w[r * (s + 1) + t + 1], tgt.getAtIndex(ValueLayout.JAVA_INT, (long) r * s + t));
                    }
                }
            }
            assertEquals(rows.state(), pairs.state());
            MemorySegment small = a.allocate(ValueLayout.JAVA_INT, (long) b * s - 1);
            assertThrows(IllegalArgumentException.class, () -> pairs.next(tok, small));
        }
    }

    @Test
    void refusesASplitShorterThanOneWindow() {
        CorpusSplit val = corpus.split(0.01).validation(); // 10 + 13 + 17 bytes
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> BatchSampler.sequential(val, 1, 64));
        assertTrue(e.getMessage().contains("validation") && e.getMessage().contains("fewer than one window"), e.getMessage());
        BatchSampler ok = BatchSampler.shuffled(val, 2, val.size() > 39 ? 39 : 1, 1); // exactly one window (+ phase room)
        ok.next();
        assertThrows(IllegalArgumentException.class, () -> BatchSampler.shuffled(train, 0, 8, 1));
    }

    @Test
    void shipsACorpusWithAKnownEntropy() throws IOException {
        Path shipped = Path.of("..", "..", "data", "corpus.txt");
        try (ByteCorpus c = ByteCorpus.open(shipped)) {
            assertEquals(237_334, c.totalBytes(), "data/corpus.txt as data/assemble-corpus.sh builds it");
            ByteCorpus.Splits s = c.split(0.1);
            assertEquals(213_600, s.train().size()); // int(237334 * 0.9), as nanoGPT's prepare.py cuts
            // Computed independently (Python, collections.Counter over the file's first 213,600 bytes and the rest).
            assertEquals(4.611959439992475, s.train().unigramEntropyBits(), 1e-9);
            assertEquals(4.713247245106986, s.validation().unigramEntropyBits(), 1e-9);
            // Validation under the add-one-smoothed unigram model of train; '*', '=' and '_' occur only in validation.
            assertEquals(5.016791143768301, s.validation().unigramCrossEntropyBits(s.train()), 1e-9);
            BatchSampler.shuffled(s.train(), 8, 256, 0).next();
            BatchSampler.sequential(s.validation(), 8, 256).next();
        }
    }

    @Test
    void ranksTakingTheirRowsOfTheGlobalBatchSeeWhatOneSamplerSees() {
        int ranks = 3;
        int rows = 2;
        int seq = 16;
        BatchSampler whole = BatchSampler.shuffled(train, ranks * rows, seq, 9);
        BatchSampler[] parts = new BatchSampler[ranks];
        for (int r = 0; r < ranks; r++) {
            parts[r] = BatchSampler.shuffled(train, ranks * rows, seq, 9);
        }
        long bytes = (long) ranks * rows * seq * Integer.BYTES;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment tok = arena.allocate(bytes);
            MemorySegment tgt = arena.allocate(bytes);
            MemorySegment tokR = arena.allocate(bytes / ranks);
            MemorySegment tgtR = arena.allocate(bytes / ranks);
            for (int batch = 0; batch < 50; batch++) {
                whole.next(tok, tgt);
                for (int r = 0; r < ranks; r++) {
                    parts[r].next(tokR, tgtR, r * rows, rows);
                    long at = (long) r * rows * seq * Integer.BYTES;
                    assertEquals(-1, tok.asSlice(at, bytes / ranks).mismatch(tokR), "batch " + batch + " rank " + r + " tokens");
                    assertEquals(-1, tgt.asSlice(at, bytes / ranks).mismatch(tgtR), "batch " + batch + " rank " + r + " targets");
                    assertEquals(whole.state(), parts[r].state(), "every rank's sampler moves with the global batch");
                }
            }
        }
        assertThrows(IllegalArgumentException.class, () -> whole.next(MemorySegment.ofArray(new int[64]),
                MemorySegment.ofArray(new int[64]), 5, 2));
    }
}
