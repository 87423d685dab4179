package io.hspmn.checkpoint;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import com.google.gson.Strictness;
import com.google.gson.stream.JsonReader;
import com.google.gson.stream.JsonToken;

import java.io.IOException;
import java.io.StringReader;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Pattern;
import java.util.zip.CRC32;

/**
 * Per-tensor checksums of a checkpoint: the CRC-32 (zlib's polynomial, so Python's {@code zlib.crc32}
 * checks it too) of each tensor's data bytes, written by {@link Checkpoint#writer} into
 * {@code __metadata__.tensor_crc32} as a JSON object {@code {"name": "8 hex digits", ...}} (safetensors
 * metadata values are strings; readers that do not know the key ignore it). A flipped bit or an overwritten
 * weight in the data section no longer passes {@code verify} or a load: the structure of the file stays
 * valid, only the checksum tells.
 */
public final class Checksums {
    /** The {@code __metadata__} key. */
    public static final String KEY = "tensor_crc32";

    private static final Pattern HEX8 = Pattern.compile("[0-9a-f]{8}");
    private static final int CHUNK = 1 << 20;

    private Checksums() {
    }

    /** CRC-32 of the segment's bytes, as 8 lower-case hex digits. */
    public static String crc32(MemorySegment s) {
        CRC32 c = new CRC32();
        byte[] buf = null;
        for (long off = 0; off < s.byteSize(); off += CHUNK) {
            long n = Math.min(CHUNK, s.byteSize() - off);
            MemorySegment part = s.asSlice(off, n);
            ByteBuffer bb;
            try {
                bb = part.asByteBuffer(); // native segments and byte[] heap segments
            } catch (UnsupportedOperationException e) {
                bb = null; // a heap segment over another array type: copy out
            }
            if (bb != null) {
                c.update(bb);
            } else {
                if (buf == null) {
                    buf = new byte[CHUNK];
                }
                MemorySegment.copy(part, 0, MemorySegment.ofArray(buf), 0, n);
                c.update(buf, 0, (int) n);
            }
        }
        return String.format(Locale.ROOT, "%08x", c.getValue());
    }

    /** The metadata value for these tensors (name -> bytes), in their order. */
    public static String encode(Map<String, MemorySegment> tensors) {
        JsonObject o = new JsonObject();
        tensors.forEach((name, bytes) -> o.addProperty(name, crc32(bytes)));
        return o.toString();
    }

    /**
     * The checksums in a metadata value, by tensor name.
     *
     * @throws IllegalArgumentException when it is not a strict JSON object of 8-hex-digit strings
     */
    public static Map<String, String> decode(String value) {
        JsonElement e;
        try {
            JsonReader r = new JsonReader(new StringReader(value));
            r.setStrictness(Strictness.STRICT);
            e = JsonParser.parseReader(r);
            if (r.peek() != JsonToken.END_DOCUMENT) {
                throw new IllegalArgumentException("__metadata__." + KEY + " has data after its JSON value");
            }
        } catch (JsonParseException | IOException ex) {
            throw new IllegalArgumentException("__metadata__." + KEY + " is not valid JSON");
        }
        if (!(e instanceof JsonObject o)) {
            throw new IllegalArgumentException("__metadata__." + KEY + " is not a JSON object");
        }
        Map<String, String> m = new LinkedHashMap<>();
        for (Map.Entry<String, JsonElement> x : o.entrySet()) {
            if (!(x.getValue() instanceof JsonPrimitive p && p.isString() && HEX8.matcher(p.getAsString()).matches())) {
                throw new IllegalArgumentException("__metadata__." + KEY + " for tensor \"" + x.getKey()
                        + "\" is not 8 lower-case hex digits");
            }
            m.put(x.getKey(), p.getAsString());
        }
        return m;
    }

    /** The sentence for a tensor whose bytes do not match its checksum. */
    static String damaged(String name, String stored, String computed) {
        return "damaged tensor \"" + name + "\": its data does not match the checksum written with it (crc32 "
                + computed + ", written " + stored + ")";
    }

    /** The note (a warning, not a problem) for a checkpoint written before checksums existed. */
    static final String ABSENT = "no per-tensor checksums (__metadata__." + KEY + "; a checkpoint written before "
            + "they existed): damage to the tensor data cannot be detected, only non-finite values";
}
