package io.hspmn.data;

import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ByteCorpusTest {
    @TempDir
    Path dir;

    private Path write(String name, String text) throws IOException {
        return write(name, text.getBytes(StandardCharsets.UTF_8));
    }

    private Path write(String name, byte[] bytes) throws IOException {
        Path p = dir.resolve(name);
        Files.createDirectories(p.getParent());
        return Files.write(p, bytes);
    }

    private static String text(MemorySegment s) {
        return new String(s.toArray(ValueLayout.JAVA_BYTE), StandardCharsets.UTF_8);
    }

    private static String text(CorpusSplit s) {
        byte[] b = new byte[(int) s.size()];
        s.copy(0, b, 0, b.length);
        return new String(b, StandardCharsets.UTF_8);
    }

    @Test
    void mapsOneFile() throws IOException {
        Path f = write("a.txt", "hello, wörld\n");
        try (ByteCorpus c = ByteCorpus.open(f)) {
            assertEquals(1, c.documents().size());
            assertEquals(f, c.documents().get(0).path());
            assertEquals("hello, wörld\n", text(c.documents().get(0).bytes()));
            assertEquals(14, c.totalBytes());
        }
    }

    @Test
    void walksAFolderInPathOrderSkippingHiddenAndEmptyFiles() throws IOException {
        write("b/2.txt", "two");
        write("a.txt", "one");
        write("b/10.txt", "ten");
        write("c/empty.txt", "");
        write(".hidden.txt", "secret");
        write(".git/objects/x", "git");
        write("b/.swp", "swap");
        try (ByteCorpus c = ByteCorpus.open(dir)) {
            List<String> names = c.documents().stream().map(d -> dir.relativize(d.path()).toString()).toList();
            assertEquals(List.of("a.txt", "b/10.txt", "b/2.txt"), names);
            assertEquals("ten", text(c.documents().get(1).bytes()));
            assertEquals(9, c.totalBytes());
        }
    }

    @Test
    void refusesAnEmptyFileOrFolder() throws IOException {
        Path f = write("empty.txt", "");
        CorpusException e = assertThrows(CorpusException.class, () -> ByteCorpus.open(f));
        assertTrue(e.getMessage().contains("empty") && e.getMessage().contains(f.toString()), e.getMessage());
        Path folder = Files.createDirectories(dir.resolve("nothing"));
        e = assertThrows(CorpusException.class, () -> ByteCorpus.open(folder));
        assertTrue(e.getMessage().contains("empty"), e.getMessage());
        write("nothing/zero.txt", "");
        write("nothing/.hidden", "hidden bytes do not count");
        e = assertThrows(CorpusException.class, () -> ByteCorpus.open(folder));
        assertEquals(folder, e.path());
    }

    @Test
    void refusesAMissingPathNamingIt() {
        Path p = dir.resolve("no-such-file.txt");
        CorpusException e = assertThrows(CorpusException.class, () -> ByteCorpus.open(p));
        assertEquals(p, e.path());
        assertTrue(e.getMessage().contains("does not exist"), e.getMessage());
    }

    @Test
    void refusesABrokenLinkInAFolderNamingIt() throws IOException {
        write("ok.txt", "fine");
        Path link = Files.createSymbolicLink(dir.resolve("gone.txt"), dir.resolve("deleted-target.txt"));
        CorpusException e = assertThrows(CorpusException.class, () -> ByteCorpus.open(dir));
        assertEquals(link, e.path());
        assertTrue(e.getMessage().contains("broken symbolic link") && e.getMessage().contains("gone.txt"), e.getMessage());
    }

    @Test
    void refusesAnUnreadableFileNamingIt() throws IOException {
        Path f = write("locked.txt", "you cannot read me");
        Files.setPosixFilePermissions(f, PosixFilePermissions.fromString("---------"));
        Assumptions.assumeFalse(Files.isReadable(f), "running as root: permissions do not stop reads");
        CorpusException e = assertThrows(CorpusException.class, () -> ByteCorpus.open(f));
        assertEquals(f, e.path());
        assertTrue(e.getMessage().contains("cannot read") && e.getMessage().contains("locked.txt"), e.getMessage());
    }

    @Test
    void refusesBinaryWithFileAndOffset() throws IOException {
        write("a.txt", "fine text");
        byte[] b = "some text then".getBytes(StandardCharsets.UTF_8);
        byte[] bin = new byte[b.length + 4];
        System.arraycopy(b, 0, bin, 0, b.length);
        bin[b.length] = 0x7f;
        bin[b.length + 1] = 0; // NUL at offset b.length + 1
        Path f = write("b.bin", bin);
        CorpusException e = assertThrows(CorpusException.class, () -> ByteCorpus.open(dir));
        assertEquals(f, e.path());
        assertEquals(b.length + 1, e.offset());
        assertTrue(e.getMessage().contains("b.bin") && e.getMessage().contains("offset " + (b.length + 1)), e.getMessage());
    }

    @Test
    void refusesLatin1ButToleratesAStrayByte() throws IOException {
        String prose = "The quick brown fox jumps over the lazy dog. ".repeat(200); // 9,000 bytes: 9 tolerated
        byte[] latin1 = (prose.substring(0, 100) + "café crème brûlée à la carte, déjà vu, naïve, señor ".repeat(3) + prose)
                .getBytes(StandardCharsets.ISO_8859_1);
        Path f = write("latin1.txt", latin1);
        CorpusException e = assertThrows(CorpusException.class, () -> ByteCorpus.open(f));
        assertEquals(f, e.path());
        assertEquals(103, e.offset(), "the é of the first café");
        assertTrue(e.getMessage().contains("not UTF-8") && e.getMessage().contains("offset 103"), e.getMessage());

        byte[] stray = (prose + "café").getBytes(StandardCharsets.ISO_8859_1);
        Path g = write("stray.txt", stray);
        try (ByteCorpus c = ByteCorpus.open(g)) {
            assertEquals(stray.length, c.totalBytes(), "the byte-level model trains on the stray byte as it is");
        }
    }

    @Test
    void closeUnmaps() throws IOException {
        Path f = write("a.txt", "abc");
        ByteCorpus c = ByteCorpus.open(f);
        MemorySegment s = c.documents().get(0).bytes();
        assertEquals('a', s.get(ValueLayout.JAVA_BYTE, 0));
        c.close();
        c.close();
        assertThrows(IllegalStateException.class, () -> s.get(ValueLayout.JAVA_BYTE, 0));
    }

    @Test
    void splitsEachDocumentByItsTail() throws IOException {
        write("a.txt", "0123456789".repeat(10)); // 100 bytes: 90 + 10
        write("b.txt", "abcdefghij".repeat(3)); // 30 bytes: 27 + 3
        try (ByteCorpus c = ByteCorpus.open(dir)) {
            ByteCorpus.Splits s = c.split(0.1);
            assertEquals(117, s.train().size());
            assertEquals(13, s.validation().size());
            assertEquals("0123456789".repeat(9) + "abcdefghij".repeat(2) + "abcdefg", text(s.train()));
            assertEquals("0123456789" + "hij", text(s.validation()));
            assertEquals(2, s.validation().parts().size());

            ByteCorpus.Splits none = c.split(0);
            assertEquals(130, none.train().size());
            assertEquals(0, none.validation().size());
            assertEquals(0.0, none.validation().unigramEntropyBits());
            assertThrows(IllegalArgumentException.class, () -> c.split(1));
            assertThrows(IllegalArgumentException.class, () -> c.split(-0.1));
            assertThrows(IllegalArgumentException.class, () -> c.split(Double.NaN));
        }
    }

    @Test
    void splitStartsValidationOnACharacter() throws IOException {
        // 7 ASCII bytes then '€' (3 bytes): a 0.2 tail would cut at byte 8, inside the €.
        Path f = write("a.txt", "abcdefg€");
        try (ByteCorpus c = ByteCorpus.open(f)) {
            ByteCorpus.Splits s = c.split(0.2);
            assertEquals("abcdefg€", text(s.train()));
            assertEquals(0, s.validation().size());
            s = c.split(0.35); // cut at byte 6
            assertEquals("abcdef", text(s.train()));
            assertEquals("g€", text(s.validation()));
        }
    }

    @Test
    void copyRunsAcrossParts() throws IOException {
        write("a.txt", "abc");
        write("b.txt", "de");
        write("c.txt", "fghij");
        try (ByteCorpus c = ByteCorpus.open(dir)) {
            CorpusSplit all = c.split(0).train();
            byte[] out = new byte[6];
            all.copy(2, out, 0, 6);
            assertArrayEquals("cdefgh".getBytes(StandardCharsets.US_ASCII), out);
            all.copy(9, out, 5, 1);
            assertEquals('j', out[5]);
            assertThrows(IndexOutOfBoundsException.class, () -> all.copy(5, out, 0, 6));
        }
    }

    @Test
    void unigramEntropy() throws IOException {
        write("one.txt", "aaaaaaaa");
        write("two.txt", "abababab");
        write("four.txt", "abcdabcdabcd");
        try (ByteCorpus c = ByteCorpus.open(dir.resolve("one.txt"))) {
            assertEquals(0.0, c.split(0).train().unigramEntropyBits());
        }
        try (ByteCorpus c = ByteCorpus.open(dir.resolve("two.txt"))) {
            assertEquals(1.0, c.split(0).train().unigramEntropyBits(), 1e-12);
            assertEquals(4, c.split(0).train().byteHistogram()['a']);
        }
        try (ByteCorpus c = ByteCorpus.open(dir.resolve("four.txt"))) {
            CorpusSplit s = c.split(0).train();
            assertEquals(2.0, s.unigramEntropyBits(), 1e-12);
            // 'a' has 3 of 12 bytes: smoothed (3 + 1) / (12 + 256)
            assertEquals(-Math.log(4.0 / 268) / Math.log(2), s.unigramCrossEntropyBits(s), 1e-12);
        }
        try (ByteCorpus one = ByteCorpus.open(dir.resolve("one.txt")); ByteCorpus two = ByteCorpus.open(dir.resolve("two.txt"))) {
            // "abababab" under the model of "aaaaaaaa": a costs log2(264/9), b (never seen) log2(264/1)
            double expected = 0.5 * Math.log(264.0 / 9) / Math.log(2) + 0.5 * Math.log(264.0) / Math.log(2);
            assertEquals(expected, two.split(0).train().unigramCrossEntropyBits(one.split(0).train()), 1e-12);
        }
        // 3/4 'a', 1/4 'b': -(3/4 log2 3/4 + 1/4 log2 1/4) = 0.811278...
        write("skew.txt", "aaab".repeat(50));
        try (ByteCorpus c = ByteCorpus.open(dir.resolve("skew.txt"))) {
            assertEquals(0.8112781244591328, c.split(0).train().unigramEntropyBits(), 1e-12);
        }
    }
}
