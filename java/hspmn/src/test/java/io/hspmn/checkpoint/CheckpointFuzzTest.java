package io.hspmn.checkpoint;

import io.hspmn.HspmnConfig;
import io.hspmn.io.InvalidSafeTensorsException;
import io.hspmn.io.SafeTensors;
import io.hspmn.io.SafeTensorsWriter;
import io.hspmn.io.TensorData;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Mutates valid checkpoints 12,000 times (seeded) and checks that each file either verifies OK or is
 * rejected with a reason, and that the reader, the loader and the verifier agree: no exception but the
 * documented IOException from the reader/loader, none at all from the verifier, no OutOfMemoryError
 * (the heap stays at the default, so one allocation sized by a header number would show).
 */
class CheckpointFuzzTest {
    static final int MUTATIONS = 12_000;
    static final long SEED = 20261123L;
    static final long MAX_ALLOC_PER_VERIFY = 16L << 20;
    static final com.sun.management.ThreadMXBean THREADS =
            (com.sun.management.ThreadMXBean) java.lang.management.ManagementFactory.getThreadMXBean();

    enum Kind {
        BIT_FLIPS, HEADER_BIT_FLIPS, TRUNCATE, APPEND, HEADER_LENGTH, NUMBER_EDIT, DTYPE_EDIT, DUPLICATE_KEY,
        WRONG_TYPE, HEADER_BYTES, HEADER_DELETE, NON_FINITE, SWAP_OFFSETS, RANDOM_HEADER, METADATA_EDIT
    }

    /** Kinds whose every output must be rejected, with a reason containing this fragment. */
    static final Map<Kind, String> ALWAYS_REJECTED = Map.of(
            Kind.TRUNCATE, "",
            Kind.HEADER_LENGTH, "",
            Kind.DUPLICATE_KEY, "appears twice",
            Kind.NON_FINITE, "non-finite",
            Kind.DTYPE_EDIT, "");

    @TempDir
    Path dir;

    static byte[] bytesOf(SafeTensorsWriter w, Path dir, String name) throws IOException {
        Path p = dir.resolve(name);
        w.write(p);
        return Files.readAllBytes(p);
    }

    List<byte[]> seeds() throws IOException {
        List<byte[]> s = new ArrayList<>();
        s.add(bytesOf(Fixtures.lm(1, 16, 2, Fixtures.tinyBlock(), true).writer(), dir, "s1"));
        s.add(bytesOf(Fixtures.lm(2, 32, 1, HspmnConfig.builder().dim(16).numHeads(4).numKvHeads(2).mlpRatio(1)
                .convKernel(2).build(), false).writer(), dir, "s2"));
        // Insertion-ordered maps: Map.of's order changes from run to run, and the mutations must not.
        Map<String, TensorData> w = new LinkedHashMap<>();
        w.put("a", TensorData.f64(new long[] {3}, new double[] {1, 2, 3}));
        w.put("b", TensorData.f32(new long[] {0, 5}, new float[0]));
        w.put("c", TensorData.i32(new long[] {2, 2}, new int[] {1, -1, 2, -2}));
        w.put("d", TensorData.u8(new long[] {3}, new byte[] {1, 2, 3}));
        Checkpoint mixed = new Checkpoint("{\"note\":\"mixed dtypes\"}", 7, 9, new long[] {1, 2, 3}, w,
                Map.of("a", TensorData.f32(new long[] {3}, new float[] {0.5f, 0, 0})), Map.of());
        s.add(bytesOf(mixed.writer(), dir, "s3"));
        return s;
    }

    @Test
    void mutatedCheckpointsAreVerifiedOrRejectedWithAReason() throws IOException {
        List<byte[]> seeds = seeds();
        for (byte[] s : seeds) {
            Path p = dir.resolve("seed.safetensors");
            Files.write(p, s);
            Report r = CheckpointVerifier.fromConfig().verify(p);
            assertTrue(r.ok(), r.render());
        }
        assertTimeoutPreemptively(Duration.ofSeconds(90), () -> run(seeds));
    }

    private void run(List<byte[]> seeds) throws IOException {
        SplittableRandom rnd = new SplittableRandom(SEED);
        Path file = dir.resolve("mutant.safetensors");
        Map<Kind, int[]> perKind = new EnumMap<>(Kind.class); // {files, rejected}
        Map<String, Integer> reasons = new TreeMap<>();
        int rejected = 0;
        long worstNanos = 0;
        long worstAlloc = 0;
        long start = System.nanoTime();
        for (int i = 0; i < MUTATIONS; i++) {
            byte[] seed = seeds.get(rnd.nextInt(seeds.size()));
            Kind kind = Kind.values()[rnd.nextInt(Kind.values().length)];
            byte[] m = mutate(seed, kind, rnd);
            Files.write(file, m);
            long t0 = System.nanoTime();
            long a0 = THREADS.getCurrentThreadAllocatedBytes();
            Report r;
            try {
                r = CheckpointVerifier.fromConfig().verify(file);
            } catch (Throwable t) {
                throw new AssertionError("mutation " + i + " (" + kind + ") made the verifier throw", t);
            }
            long allocated = THREADS.getCurrentThreadAllocatedBytes() - a0;
            worstNanos = Math.max(worstNanos, System.nanoTime() - t0);
            worstAlloc = Math.max(worstAlloc, allocated);
            // The heap is large enough to hide one wild allocation, so measure it: the verifier's garbage
            // is a few copies of the header, nowhere near what a header number could ask for.
            assertTrue(allocated < MAX_ALLOC_PER_VERIFY, "mutation " + i + " (" + kind + "): verify allocated "
                    + allocated + " bytes for a " + m.length + "-byte file");
            int[] k = perKind.computeIfAbsent(kind, x -> new int[2]);
            k[0]++;
            String readerWhy = readerRefusal(file, i, kind);
            boolean readerOk = readerWhy == null;
            boolean loaderOk = loaderAccepts(file, i, kind);
            if (r.ok()) {
                assertTrue(readerOk && loaderOk, "mutation " + i + " (" + kind + ") verifies but does not load");
                if (ALWAYS_REJECTED.containsKey(kind)) {
                    fail("mutation " + i + " (" + kind + ") must be rejected but verified OK:\n" + r.render());
                }
                continue;
            }
            rejected++;
            k[1]++;
            String why = r.firstProblem();
            assertTrue(why != null && !why.isBlank(), "mutation " + i + " rejected without a reason");
            String want = ALWAYS_REJECTED.get(kind);
            if (want != null) {
                assertTrue(String.join("\n", r.problems()).contains(want), kind + ": " + r.render());
            }
            // What the reader refuses, the verifier must refuse with the reader's own reason first.
            if (!readerOk) {
                assertFalse(loaderOk, "mutation " + i + ": the reader refuses it but the loader takes it");
                assertTrue(readerWhy.endsWith(": " + why), "mutation " + i + ": reader says " + readerWhy + ", verifier " + why);
            }
            reasons.merge(category(why), 1, Integer::sum);
        }
        double secs = (System.nanoTime() - start) / 1e9;
        StringBuilder b = new StringBuilder();
        b.append(String.format("fuzz: %d mutated files, %d rejected, %d verified OK, %.1f s, slowest verify %.1f ms,"
                + " most heap allocated by one verify %d KiB%n",
                MUTATIONS, rejected, MUTATIONS - rejected, secs, worstNanos / 1e6, worstAlloc >> 10));
        perKind.forEach((kk, v) -> b.append(String.format("  kind %-16s %5d files %5d rejected%n", kk, v[0], v[1])));
        reasons.entrySet().stream().sorted((x, y) -> y.getValue() - x.getValue())
                .forEach(e -> b.append(String.format("  reason %5d  %s%n", e.getValue(), e.getKey())));
        System.out.print(b);
        Files.writeString(Path.of("target", "checkpoint-fuzz-report.txt"), b);
        assertTrue(MUTATIONS >= 10_000);
        // Every kind was exercised, and the run was not trivially all-rejected or all-accepted.
        assertEquals(Kind.values().length, perKind.size());
        assertTrue(rejected > MUTATIONS / 2 && rejected < MUTATIONS, "rejected " + rejected);
    }

    /** Null when SafeTensors.open accepts the file, else its reason. */
    private static String readerRefusal(Path file, int i, Kind kind) {
        try (SafeTensors st = SafeTensors.open(file)) {
            return null;
        } catch (InvalidSafeTensorsException e) {
            assertFalse(e.getMessage().isBlank());
            return e.getMessage();
        } catch (Throwable t) {
            throw new AssertionError("mutation " + i + " (" + kind + ") made SafeTensors.open throw " + t, t);
        }
    }

    private static boolean loaderAccepts(Path file, int i, Kind kind) {
        try {
            Checkpoint.load(file, warning -> { }); // a mutant without checksums only warns
            return true;
        } catch (InvalidSafeTensorsException e) {
            assertFalse(e.getMessage().isBlank());
            return false;
        } catch (Throwable t) {
            throw new AssertionError("mutation " + i + " (" + kind + ") made Checkpoint.load throw " + t, t);
        }
    }

    private static final Pattern QUOTED = Pattern.compile("\"[^\"]*\"");
    private static final Pattern NUMBER = Pattern.compile("-?[0-9]+");

    /** The reason with names and numbers blanked, so the histogram groups by kind of problem. */
    static String category(String why) {
        String s = why.replaceAll("header is not valid JSON: .*", "header is not valid JSON: ...");
        s = QUOTED.matcher(s).replaceAll("\"_\"");
        s = NUMBER.matcher(s).replaceAll("N");
        s = s.replaceAll("\\[[N, ]*\\]", "[..]").replaceAll("\\[N, N\\)", "[..)");
        return s.length() > 90 ? s.substring(0, 90) + "..." : s;
    }

    // ---- mutations ----

    static int headerLen(byte[] f) {
        return (int) ByteBuffer.wrap(f).order(ByteOrder.LITTLE_ENDIAN).getLong();
    }

    static String header(byte[] f) {
        return new String(f, 8, headerLen(f), StandardCharsets.UTF_8);
    }

    /** Rebuilds the file with a new header; the length field is kept consistent unless {@code keepLength}. */
    static byte[] withHeader(byte[] f, String h, boolean keepLength) {
        byte[] hb = h.getBytes(StandardCharsets.UTF_8);
        int old = headerLen(f);
        byte[] out = new byte[8 + hb.length + f.length - 8 - old];
        ByteBuffer.wrap(out).order(ByteOrder.LITTLE_ENDIAN).putLong(keepLength ? old : hb.length);
        System.arraycopy(hb, 0, out, 8, hb.length);
        System.arraycopy(f, 8 + old, out, 8 + hb.length, f.length - 8 - old);
        return out;
    }

    static final String[] BAD_DTYPES = {"F16", "f32", "", "BF16 ", "FLOAT", "I8", "U64", "F8_E4M3", "BOOL", "bf16", "\\u0000"};
    static final String[] NUMBERS = {"-1", "0", "1", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
            "18446744073709551615", "1e3", "1.5", "4294967296", "4611686018427387904", "00", "1E400", "-0"};
    static final String[] VALUES = {"\"x\"", "null", "true", "{}", "[]", "[[1]]", "{\"a\":1}", "-1", "[1,2,3]", "\"\""};
    static final Pattern NUM_IN_HEADER = Pattern.compile("(?<=[\\[,])-?[0-9]+(?=[\\],])");
    static final Pattern DTYPE_IN_HEADER = Pattern.compile("\"dtype\":\"[A-Z0-9]+\"");
    static final Pattern ENTRY = Pattern.compile("\"[a-z0-9_.]+\":\\{\"dtype\":\"[A-Z0-9]+\",\"shape\":\\[[0-9,]*\\],\"data_offsets\":\\[[0-9]+,[0-9]+\\]\\}");
    static final Pattern ARRAY = Pattern.compile("\\[[0-9,]*\\]");

    static byte[] mutate(byte[] seed, Kind kind, SplittableRandom r) {
        byte[] f = seed.clone();
        int hl = headerLen(f);
        String h = header(f);
        switch (kind) {
            case BIT_FLIPS -> {
                for (int n = 1 + r.nextInt(8); n > 0; n--) {
                    int at = r.nextInt(f.length);
                    f[at] ^= (byte) (1 << r.nextInt(8));
                }
                return f;
            }
            case HEADER_BIT_FLIPS -> {
                for (int n = 1 + r.nextInt(4); n > 0; n--) {
                    int at = 8 + r.nextInt(hl);
                    f[at] ^= (byte) (1 << r.nextInt(8));
                }
                return f;
            }
            case TRUNCATE -> {
                return Arrays.copyOf(f, r.nextInt(f.length));
            }
            case APPEND -> {
                byte[] out = Arrays.copyOf(f, f.length + 1 + r.nextInt(64));
                for (int i = f.length; i < out.length; i++) {
                    out[i] = (byte) r.nextInt(256);
                }
                return out;
            }
            case HEADER_LENGTH -> {
                long[] choices = {-1L, Long.MIN_VALUE, Long.MAX_VALUE, 1L << 32, (100L << 20) + 1, f.length - 7L,
                        f.length, 0, 1, r.nextLong(), hl + 1 + r.nextInt(8), hl - 1 - r.nextInt(Math.max(1, Math.min(hl - 1, 64)))};
                long v = choices[r.nextInt(choices.length)];
                if (v == hl) {
                    v = hl + 1;
                }
                ByteBuffer.wrap(f).order(ByteOrder.LITTLE_ENDIAN).putLong(v);
                return f;
            }
            case NUMBER_EDIT -> {
                List<int[]> spans = spans(NUM_IN_HEADER, h);
                int[] s = spans.get(r.nextInt(spans.size()));
                int[] other = spans.get(r.nextInt(spans.size()));
                // Another number from the same header makes plausible overlaps and mismatched spans.
                String repl = r.nextBoolean() ? NUMBERS[r.nextInt(NUMBERS.length)] : h.substring(other[0], other[1]);
                String hs = h.substring(0, s[0]) + repl + h.substring(s[1]);
                if (hs.equals(h)) {
                    hs = h.substring(0, s[0]) + "-1" + h.substring(s[1]);
                }
                return withHeader(f, hs, r.nextInt(4) == 0);
            }
            case DTYPE_EDIT -> {
                List<int[]> spans = spans(DTYPE_IN_HEADER, h);
                int[] s = spans.get(r.nextInt(spans.size()));
                String hs = h.substring(0, s[0]) + "\"dtype\":\"" + BAD_DTYPES[r.nextInt(BAD_DTYPES.length)] + "\""
                        + h.substring(s[1]);
                return withHeader(f, hs, false);
            }
            case DUPLICATE_KEY -> {
                List<int[]> spans = spans(ENTRY, h);
                int[] s = spans.get(r.nextInt(spans.size()));
                String entry = h.substring(s[0], s[1]);
                String hs = h.substring(0, s[1]) + "," + entry + h.substring(s[1]);
                return withHeader(f, hs, false);
            }
            case WRONG_TYPE -> {
                List<int[]> spans = spans(r.nextBoolean() ? ARRAY : DTYPE_IN_HEADER, h);
                int[] s = spans.get(r.nextInt(spans.size()));
                String target = h.substring(s[0], s[1]);
                String hs;
                if (target.startsWith("\"dtype\"")) {
                    hs = h.substring(0, s[0]) + "\"dtype\":" + VALUES[r.nextInt(VALUES.length)] + h.substring(s[1]);
                } else {
                    hs = h.substring(0, s[0]) + VALUES[r.nextInt(VALUES.length)] + h.substring(s[1]);
                }
                return withHeader(f, hs, false);
            }
            case HEADER_BYTES -> {
                String alphabet = "{}[],:\"\\ 0123456789-eE.abcdtypeshapdata_offsets\u00e9\u0000";
                int at = 8 + r.nextInt(hl);
                for (int n = 1 + r.nextInt(6); n > 0 && at < 8 + hl; n--, at++) {
                    f[at] = r.nextInt(4) == 0 ? (byte) r.nextInt(256) : (byte) alphabet.charAt(r.nextInt(alphabet.length()));
                }
                return f;
            }
            case HEADER_DELETE -> {
                int a = r.nextInt(h.length());
                int b = Math.min(h.length(), a + 1 + r.nextInt(24));
                return withHeader(f, h.substring(0, a) + h.substring(b), r.nextInt(3) == 0);
            }
            case NON_FINITE -> {
                // Corrupt one element of a float tensor to NaN/Inf: the first float entry with data.
                try (var a = java.lang.foreign.Arena.ofConfined()) {
                    var h2 = io.hspmn.io.SafeTensorsHeader.parse(java.lang.foreign.MemorySegment.ofArray(f));
                    List<SafeTensors.Entry> floats = h2.entries().values().stream()
                            .filter(e -> e.dtype().isFloating() && e.end() > e.begin()).toList();
                    SafeTensors.Entry e = floats.get(r.nextInt(floats.size()));
                    int size = e.dtype().byteSize();
                    long idx = r.nextLong(e.numel());
                    int at = (int) (h2.dataOffset() + e.begin() + idx * size);
                    // Little-endian: the exponent's high bits sit in the last two bytes of the element.
                    f[at + size - 1] |= 0x7f;
                    f[at + size - 2] |= (byte) (size == 2 ? 0x80 : size == 4 ? 0x80 : 0xf0);
                    return f;
                } catch (IOException ex) {
                    throw new AssertionError(ex);
                }
            }
            case SWAP_OFFSETS -> {
                List<int[]> spans = spans(Pattern.compile("\"data_offsets\":\\[[0-9]+,[0-9]+\\]"), h);
                int[] s1 = spans.get(r.nextInt(spans.size()));
                int[] s2 = spans.get(r.nextInt(spans.size()));
                if (s1[0] == s2[0]) {
                    String hs = h.substring(0, s1[0]) + "\"data_offsets\":[0," + (f.length) + "]" + h.substring(s1[1]);
                    return withHeader(f, hs, false);
                }
                int[] lo = s1[0] < s2[0] ? s1 : s2;
                int[] hi = s1[0] < s2[0] ? s2 : s1;
                String hs = h.substring(0, lo[0]) + h.substring(hi[0], hi[1]) + h.substring(lo[1], hi[0])
                        + h.substring(lo[0], lo[1]) + h.substring(hi[1]);
                return withHeader(f, hs, false);
            }
            case RANDOM_HEADER -> {
                String[] heads = {"[" .repeat(5000) + "]".repeat(5000), "{\"a\":" .repeat(3000) + "1" + "}".repeat(3000),
                        "{}", "{\"__metadata__\":{}}", "{\"__metadata__\":{},\"__metadata__\":{}}", "null", "{\"a\":1}",
                        "{'a':1}", "{a:1}", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[" + "1,".repeat(2000) + "1],\"data_offsets\":[0,4]}}",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,0]}}",
                        "{\"a\":{\"dtype\":\"F64\",\"shape\":[1152921504606846976],\"data_offsets\":[0,0]}}",
                        "/* c */{}", "\uFEFF{}", "{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]," +
                        "\"data_offsets\":[0,4]}}"};
                return withHeader(f, heads[r.nextInt(heads.length)], false);
            }
            case METADATA_EDIT -> {
                String[] edits = {"\"step\":\"-1\"", "\"step\":\"abc\"", "\"step\":7", "\"step\":\"99999999999999999999\"",
                        "\"format\":\"other\"", "\"format_version\":\"2\"", "\"config\":\"{a:1}\"", "\"config\":\"[]\"",
                        "\"data_position\":\"01\"", "\"config\":\"{\\\"vocab_size\\\":-1,\\\"num_layers\\\":1,\\\"block\\\":{}}\"",
                        "\"config\":\"{\\\"vocab_size\\\":16,\\\"num_layers\\\":99999999,\\\"block\\\":{}}\"",
                        "\"config\":\"{\\\"vocab_size\\\":16,\\\"num_layers\\\":1,\\\"block\\\":{\\\"dim\\\":0}}\""};
                String e = edits[r.nextInt(edits.length)];
                String key = e.substring(0, e.indexOf(':') + 1);
                Matcher m = Pattern.compile(Pattern.quote(key) + "\"(?:[^\"\\\\]|\\\\.)*\"").matcher(h);
                String hs = m.find() ? h.substring(0, m.start()) + e + h.substring(m.end())
                        : h.replace("\"__metadata__\":{", "\"__metadata__\":{" + e + ",");
                return withHeader(f, hs, false);
            }
            default -> throw new AssertionError(kind);
        }
    }

    static List<int[]> spans(Pattern p, String s) {
        List<int[]> out = new ArrayList<>();
        Matcher m = p.matcher(s);
        while (m.find()) {
            out.add(new int[] {m.start(), m.end()});
        }
        if (out.isEmpty()) {
            throw new AssertionError("pattern " + p + " not in header " + s);
        }
        return out;
    }
}
