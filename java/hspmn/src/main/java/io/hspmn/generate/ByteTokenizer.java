package io.hspmn.generate;

import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;

/**
 * The byte-level vocabulary (MODEL.md "The language model"): a token is one byte of UTF-8 text, id 0..255.
 * A model with a smaller vocabulary accepts only the bytes below its size.
 */
public final class ByteTokenizer {
    private final int vocabSize;

    public ByteTokenizer(int vocabSize) {
        if (vocabSize < 2) {
            throw new IllegalArgumentException("vocabulary size must be >= 2, got " + vocabSize);
        }
        this.vocabSize = vocabSize;
    }

    public int vocabSize() {
        return vocabSize;
    }

    /**
     * The UTF-8 bytes of {@code text} as ids.
     *
     * @throws IllegalArgumentException when a byte is not in the vocabulary, or the text has a lone
     *         surrogate (no UTF-8 for it: getBytes would silently write '?')
     */
    public int[] encode(String text) {
        checkNoLoneSurrogate(text);
        byte[] b = text.getBytes(StandardCharsets.UTF_8);
        int[] ids = new int[b.length];
        for (int i = 0; i < b.length; i++) {
            ids[i] = b[i] & 0xff;
            if (ids[i] >= vocabSize) {
                throw new IllegalArgumentException("byte " + i + " of the text (0x" + Integer.toHexString(ids[i])
                        + ") is not in the model's vocabulary of " + vocabSize);
            }
        }
        return ids;
    }

    private static void checkNoLoneSurrogate(String text) {
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (Character.isHighSurrogate(c) && i + 1 < text.length() && Character.isLowSurrogate(text.charAt(i + 1))) {
                i++;
            } else if (Character.isSurrogate(c)) {
                throw new IllegalArgumentException(String.format(
                        "the text has a lone surrogate U+%04X at character %d, which has no UTF-8 encoding"
                                + " (a \\u%04X escape must be one half of a high + low surrogate pair)", (int) c, i, (int) c));
            }
        }
    }

    /** The text of ids; bytes that are not valid UTF-8 become U+FFFD. Ids above 255 are refused. */
    public static String decode(int[] ids, int from, int to) {
        byte[] b = new byte[to - from];
        for (int i = from; i < to; i++) {
            b[i - from] = toByte(ids[i]);
        }
        return new String(b, StandardCharsets.UTF_8);
    }

    static byte toByte(int id) {
        if (id < 0 || id > 255) {
            throw new IllegalArgumentException("token " + id + " is not a byte");
        }
        return (byte) id;
    }

    /**
     * Turns a stream of byte tokens into text as it arrives: a character split across tokens comes out once
     * its last byte has; invalid UTF-8 becomes U+FFFD. Not thread-safe.
     */
    public static final class StreamDecoder {
        private final CharsetDecoder decoder = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPLACE).onUnmappableCharacter(CodingErrorAction.REPLACE);
        private final ByteBuffer in = ByteBuffer.allocate(8);
        private final CharBuffer out = CharBuffer.allocate(16);

        /** The text completed by this token ("" while a character is still incomplete). */
        public String accept(int id) {
            in.put(toByte(id));
            in.flip();
            out.clear();
            decoder.decode(in, out, false);
            in.compact();
            out.flip();
            return out.toString();
        }

        /** Whatever is pending at the end of the stream (an incomplete character becomes U+FFFD). */
        public String finish() {
            in.flip();
            out.clear();
            decoder.decode(in, out, true);
            decoder.flush(out);
            in.clear();
            decoder.reset();
            out.flip();
            return out.toString();
        }
    }
}
