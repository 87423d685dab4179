package io.hspmn.generate;

import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

class StopAndTokenizerTest {
    @Test
    void stopMatcherFindsEndingsAndHoldsBackPrefixes() {
        StopMatcher m = new StopMatcher(List.of(new int[] {1, 2, 3}, new int[] {9}));
        assertEquals(0, m.matchedLength(new int[] {1, 2}, 2));
        assertEquals(2, m.holdBack(new int[] {1, 2}, 2));
        assertEquals(1, m.holdBack(new int[] {5, 1}, 2));
        assertEquals(0, m.holdBack(new int[] {5, 2}, 2));
        assertEquals(3, m.matchedLength(new int[] {7, 1, 2, 3}, 4));
        assertEquals(1, m.matchedLength(new int[] {7, 9}, 2));
        assertEquals(0, m.holdBack(new int[] {9}, 1)); // a full one-token stop is a match, never a prefix
        assertEquals(0, m.matchedLength(new int[] {1, 2, 3, 4}, 4));
        assertEquals(3, m.matchedLength(new int[] {1, 2, 3, 4}, 3)); // only tokens[0..n) count
    }

    @Test
    void tokenizerIsUtf8Bytes() {
        ByteTokenizer t = new ByteTokenizer(256);
        assertArrayEquals(new int[] {0x68, 0xc3, 0xa9}, t.encode("hé"));
        assertEquals("hé", ByteTokenizer.decode(new int[] {0x68, 0xc3, 0xa9}, 0, 3));
        assertThrows(IllegalArgumentException.class, () -> new ByteTokenizer(128).encode("é"));
        assertArrayEquals(new int[] {97, 98}, new ByteTokenizer(128).encode("ab"));
    }

    @Test
    void streamDecoderEmitsWholeCharacters() {
        ByteTokenizer.StreamDecoder d = new ByteTokenizer.StreamDecoder();
        byte[] b = "a€😀b".getBytes(StandardCharsets.UTF_8);
        StringBuilder sb = new StringBuilder();
        StringBuilder pieces = new StringBuilder();
        for (byte x : b) {
            String s = d.accept(x & 0xff);
            sb.append(s);
            pieces.append('[').append(s).append(']');
        }
        sb.append(d.finish());
        assertEquals("a€😀b", sb.toString());
        assertEquals("[a][][][€][][][][😀][b]", pieces.toString());
        // invalid and truncated input becomes U+FFFD instead of failing
        ByteTokenizer.StreamDecoder e = new ByteTokenizer.StreamDecoder();
        String s = e.accept(0xff) + e.accept('x') + e.accept(0xe2) + e.finish();
        assertEquals("\uFFFDx\uFFFD", s);
    }
}
