package io.hspmn.io;

import com.google.gson.Strictness;
import com.google.gson.stream.JsonReader;
import com.google.gson.stream.JsonToken;
import com.google.gson.stream.MalformedJsonException;
import io.hspmn.io.SafeTensors.DType;
import io.hspmn.io.SafeTensors.Entry;

import java.io.IOException;
import java.io.StringReader;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * The structural validation of a safetensors file, shared by the reader and the verifier so both refuse
 * the same files for the same reasons. Every number taken from the file is range-checked before it
 * sizes anything: the only allocations are the header bytes (bounded by {@link #MAX_HEADER_BYTES} and
 * by the file size) and objects proportional to the header's length.
 *
 * <p>The JSON is read token by token in strict mode rather than through {@code JsonParser}: Gson's tree
 * parser is lenient (unquoted strings, single quotes, comments) and lets a duplicate key silently
 * replace the first, and a tensor named twice must be refused, not half-read.
 */
public record SafeTensorsHeader(long headerBytes, long dataOffset, long dataBytes, Map<String, Entry> entries,
                                Map<String, String> metadata) {
    /** Headers past this are refused rather than parsed (the format's reference reader uses 100 MB). */
    public static final long MAX_HEADER_BYTES = 100L << 20;

    private static final ValueLayout.OfLong U64_LE = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final Pattern INTEGER = Pattern.compile("-?(0|[1-9][0-9]*)");

    /** Parses and validates the header of {@code file} (the whole file's bytes); the message says what is wrong. */
    public static SafeTensorsHeader parse(MemorySegment file) throws InvalidSafeTensorsException {
        long size = file.byteSize();
        if (size < 8) {
            throw new InvalidSafeTensorsException("file is " + size + " bytes, shorter than the 8-byte header length");
        }
        long n = file.get(U64_LE, 0);
        // n is unsigned on disk: a negative long here is a length past 2^63, refused with the rest.
        if (n < 2 || n > MAX_HEADER_BYTES || n > size - 8) {
            throw new InvalidSafeTensorsException("header length " + Long.toUnsignedString(n) + " is out of range (file is "
                    + size + " bytes, limit " + MAX_HEADER_BYTES + ")");
        }
        byte[] hdr = file.asSlice(8, n).toArray(ValueLayout.JAVA_BYTE);
        String json;
        try {
            json = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(hdr)).toString();
        } catch (CharacterCodingException e) {
            throw new InvalidSafeTensorsException("header is not valid UTF-8");
        }
        if (json.charAt(0) != '{') {
            throw new InvalidSafeTensorsException("header does not start with '{'");
        }
        long dataBytes = size - 8 - n;
        Map<String, String> meta = new LinkedHashMap<>();
        Map<String, Entry> entries = new LinkedHashMap<>();
        try {
            readRoot(json, dataBytes, entries, meta);
        } catch (MalformedJsonException | IllegalStateException | NumberFormatException e) {
            throw new InvalidSafeTensorsException("header is not valid JSON: " + jsonError(e));
        } catch (InvalidSafeTensorsException e) {
            throw e;
        } catch (IOException e) {
            // JsonReader reports an unexpected end of input as a plain IOException ("End of input at ...").
            throw new InvalidSafeTensorsException("header is not valid JSON: " + jsonError(e));
        }
        checkLayout(entries, dataBytes);
        return new SafeTensorsHeader(n, 8 + n, dataBytes, Collections.unmodifiableMap(entries),
                Collections.unmodifiableMap(meta));
    }

    private static void readRoot(String json, long dataBytes, Map<String, Entry> entries, Map<String, String> meta)
            throws IOException {
        JsonReader r = new JsonReader(new StringReader(json));
        r.setStrictness(Strictness.STRICT);
        expect(r, JsonToken.BEGIN_OBJECT, "header");
        r.beginObject();
        boolean sawMetadata = false;
        while (r.hasNext()) {
            String name = r.nextName();
            if (entries.containsKey(name) || (name.equals("__metadata__") && sawMetadata)) {
                throw new InvalidSafeTensorsException("key " + quote(name) + " appears twice");
            }
            if (name.equals("__metadata__")) {
                readMetadata(r, meta);
                sawMetadata = true;
                continue;
            }
            if (name.isEmpty()) {
                throw new InvalidSafeTensorsException("a tensor has an empty name");
            }
            entries.put(name, readEntry(r, name, dataBytes));
        }
        r.endObject();
        if (r.peek() != JsonToken.END_DOCUMENT) {
            throw new InvalidSafeTensorsException("header has data after its JSON object");
        }
    }

    private static void readMetadata(JsonReader r, Map<String, String> meta) throws IOException {
        expect(r, JsonToken.BEGIN_OBJECT, "__metadata__");
        r.beginObject();
        Set<String> seen = new HashSet<>();
        while (r.hasNext()) {
            String k = r.nextName();
            if (!seen.add(k)) {
                throw new InvalidSafeTensorsException("__metadata__ key " + quote(k) + " appears twice");
            }
            expect(r, JsonToken.STRING, "__metadata__." + quote(k));
            meta.put(k, r.nextString());
        }
        r.endObject();
    }

    private static Entry readEntry(JsonReader r, String name, long dataBytes) throws IOException {
        String t = "tensor " + quote(name);
        expect(r, JsonToken.BEGIN_OBJECT, t + ": entry");
        r.beginObject();
        String dtypeName = null;
        long[] shape = null;
        long[] offsets = null;
        while (r.hasNext()) {
            String k = r.nextName();
            switch (k) {
                case "dtype" -> {
                    if (dtypeName != null) {
                        throw new InvalidSafeTensorsException(t + ": dtype appears twice");
                    }
                    expect(r, JsonToken.STRING, t + ": dtype");
                    dtypeName = r.nextString();
                }
                case "shape" -> {
                    if (shape != null) {
                        throw new InvalidSafeTensorsException(t + ": shape appears twice");
                    }
                    shape = readLongs(r, t + ": shape");
                }
                case "data_offsets" -> {
                    if (offsets != null) {
                        throw new InvalidSafeTensorsException(t + ": data_offsets appears twice");
                    }
                    offsets = readLongs(r, t + ": data_offsets");
                }
                default -> throw new InvalidSafeTensorsException(t + ": unknown key " + quote(k));
            }
        }
        r.endObject();
        if (dtypeName == null) {
            throw new InvalidSafeTensorsException(t + ": dtype missing");
        }
        DType dtype = DType.parse(dtypeName);
        if (dtype == null) {
            throw new InvalidSafeTensorsException(t + ": dtype " + quote(dtypeName) + " not supported "
                    + Arrays.toString(DType.values()));
        }
        if (shape == null) {
            throw new InvalidSafeTensorsException(t + ": shape missing");
        }
        if (offsets == null || offsets.length != 2) {
            throw new InvalidSafeTensorsException(t + ": data_offsets missing or not [begin, end]");
        }
        long numel = 1;
        try {
            for (int i = 0; i < shape.length; i++) {
                if (shape[i] < 0) {
                    throw new InvalidSafeTensorsException(t + ": shape[" + i + "] is negative");
                }
                numel = Math.multiplyExact(numel, shape[i]);
            }
        } catch (ArithmeticException e) {
            throw new InvalidSafeTensorsException(t + ": shape " + Arrays.toString(shape) + " overflows 64 bits");
        }
        long begin = offsets[0];
        long end = offsets[1];
        if (begin < 0 || end < 0) {
            throw new InvalidSafeTensorsException(t + ": data_offsets [" + begin + ", " + end + "] are negative");
        }
        if (begin > end || end > dataBytes) {
            throw new InvalidSafeTensorsException(t + ": data_offsets [" + begin + ", " + end + ") outside the "
                    + dataBytes + "-byte data section");
        }
        long need;
        try {
            need = Math.multiplyExact(numel, (long) dtype.byteSize());
        } catch (ArithmeticException e) {
            throw new InvalidSafeTensorsException(t + ": " + dtype + " " + Arrays.toString(shape) + " overflows 64 bits");
        }
        if (need != end - begin) {
            throw new InvalidSafeTensorsException(t + ": " + (end - begin) + " bytes for " + dtype + " "
                    + Arrays.toString(shape) + ", which needs " + need);
        }
        return new Entry(name, dtype, shape, begin, end);
    }

    /** An array of integer literals; its length is bounded by the header's, which is bounded above. */
    private static long[] readLongs(JsonReader r, String what) throws IOException {
        expect(r, JsonToken.BEGIN_ARRAY, what);
        r.beginArray();
        List<Long> out = new ArrayList<>();
        while (r.hasNext()) {
            String where = what + "[" + out.size() + "]";
            expect(r, JsonToken.NUMBER, where);
            String lit = r.nextString();
            if (!INTEGER.matcher(lit).matches()) {
                throw new InvalidSafeTensorsException(where + " is not an integer: " + clip(lit));
            }
            try {
                out.add(Long.parseLong(lit));
            } catch (NumberFormatException e) {
                throw new InvalidSafeTensorsException(where + " does not fit in 64 bits: " + clip(lit));
            }
        }
        r.endArray();
        long[] a = new long[out.size()];
        for (int i = 0; i < a.length; i++) {
            a[i] = out.get(i);
        }
        return a;
    }

    private static void expect(JsonReader r, JsonToken want, String what) throws IOException {
        JsonToken got = r.peek();
        if (got != want) {
            throw new InvalidSafeTensorsException(what + " is " + describe(got) + ", expected " + describe(want));
        }
    }

    /**
     * Sorted by offset the tensors must tile the data section exactly, as the format's reference reader
     * demands: an overlap would let two tensors alias, a gap or tail hides bytes nobody accounts for.
     */
    private static void checkLayout(Map<String, Entry> entries, long dataBytes) throws InvalidSafeTensorsException {
        List<Entry> sorted = new ArrayList<>(entries.values());
        sorted.sort(Comparator.comparingLong(Entry::begin).thenComparingLong(Entry::end));
        long at = 0;
        Entry prev = null;
        for (Entry e : sorted) {
            if (e.begin() < at) {
                throw new InvalidSafeTensorsException("tensors " + quote(prev.name()) + " and " + quote(e.name())
                        + " overlap");
            }
            if (e.begin() > at) {
                throw new InvalidSafeTensorsException("data bytes [" + at + ", " + e.begin() + ") before tensor "
                        + quote(e.name()) + " belong to no tensor");
            }
            at = e.end();
            prev = e;
        }
        if (at != dataBytes) {
            throw new InvalidSafeTensorsException("data bytes [" + at + ", " + dataBytes + ") at the end belong to no tensor");
        }
    }

    private static String describe(JsonToken t) {
        return switch (t) {
            case BEGIN_OBJECT -> "an object";
            case BEGIN_ARRAY -> "an array";
            case STRING -> "a string";
            case NUMBER -> "a number";
            case BOOLEAN -> "a boolean";
            case NULL -> "null";
            case END_DOCUMENT -> "the end of the header";
            default -> t.toString();
        };
    }

    /** Gson's message without its exception class prefix and troubleshooting link, on one line. */
    public static String jsonError(Throwable e) {
        while (e.getCause() != null && e.getCause() != e) {
            e = e.getCause();
        }
        String m = String.valueOf(e.getMessage());
        int cut = m.indexOf("\nSee ");
        if (cut >= 0) {
            m = m.substring(0, cut);
        }
        // Gson's advice to go lenient is wrong for a file we must not trust; keep only the where.
        m = m.replace("Use JsonReader.setStrictness(Strictness.LENIENT) to accept malformed JSON", "malformed JSON");
        return clip(m.replace('\n', ' ').strip());
    }

    static String quote(String s) {
        return "\"" + clip(s) + "\"";
    }

    private static String clip(String s) {
        return s.length() <= 120 ? s : s.substring(0, 120) + "...(" + s.length() + " chars)";
    }
}
