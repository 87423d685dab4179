package io.hspmn.checkpoint;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import io.hspmn.HspmnConfig;
import io.hspmn.io.InvalidSafeTensorsException;
import io.hspmn.io.SafeTensors.DType;
import io.hspmn.io.SafeTensors.Entry;
import io.hspmn.io.SafeTensorsHeader;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;
import java.util.regex.Pattern;

/**
 * {@code verify CKPT}: checks a checkpoint file without trusting any of it. In order: the safetensors
 * structure ({@link SafeTensorsHeader#parse}: header length bounds, strict JSON, entry types, known
 * dtypes, shape x itemsize == offset span with overflow-checked math, offsets tiling the data section),
 * the checkpoint fields ({@code __metadata__} format, config, step, data position, {@code rng.state},
 * optimizer moments matching their weights, the checksum table naming exactly the file's tensors), names
 * and shapes against the config, every tensor's data against its checksum ({@link Checksums}; a file
 * without checksums gets a warning note, not a problem), and finiteness of every float value. A structural failure stops there (nothing after it can be located safely); the
 * later checks report every problem they find, up to {@link #MAX_PROBLEMS}.
 *
 * <p>{@link #verify(Path)} and {@link #verify(MemorySegment, String)} never throw: an unreadable file is
 * a problem in the report like any other.
 */
public final class CheckpointVerifier {
    public static final int MAX_PROBLEMS = 100;

    /** An expected tensor: its shape, and the dtypes allowed (empty set: any floating dtype). */
    public record Expected(long[] shape, Set<DType> dtypes) {
    }

    private static final Pattern DECIMAL = Pattern.compile("0|[1-9][0-9]{0,18}");

    private final Map<String, Expected> expected;

    private CheckpointVerifier(Map<String, Expected> expected) {
        this.expected = expected;
    }

    /** Derives expected names and shapes from the checkpoint's own config, when it describes a language model. */
    public static CheckpointVerifier fromConfig() {
        return new CheckpointVerifier(null);
    }

    /** Checks weights against exactly these names and shapes (the config's are then not consulted). */
    public static CheckpointVerifier expecting(Map<String, Expected> expected) {
        return new CheckpointVerifier(new LinkedHashMap<>(expected));
    }

    /**
     * {@code verify CKPT...} until the CLI lands: prints each report; exit status 0 when all are OK,
     * 1 when any is invalid, 2 on usage errors.
     */
    public static void main(String[] args) {
        if (args.length == 0) {
            System.err.println("usage: verify CKPT...");
            System.exit(2);
        }
        boolean ok = true;
        for (String a : args) {
            Report r = fromConfig().verify(Path.of(a));
            System.out.print(r.render());
            ok &= r.ok();
        }
        System.exit(ok ? 0 : 1);
    }

    public Report verify(Path path) {
        try (Arena arena = Arena.ofConfined(); FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            return verify(ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(), arena), path.toString());
        } catch (IOException | RuntimeException e) {
            return new Report(path.toString(), List.of("cannot read the file: " + e), List.of());
        }
    }

    /** Verifies a whole file's bytes held in {@code file}. */
    public Report verify(MemorySegment file, String source) {
        List<String> problems = new ArrayList<>();
        List<String> notes = new ArrayList<>();
        SafeTensorsHeader h;
        try {
            h = SafeTensorsHeader.parse(file);
        } catch (InvalidSafeTensorsException e) {
            problems.add(e.getMessage());
            return new Report(source, problems, notes);
        }
        long total = 0;
        for (Entry e : h.entries().values()) {
            total += e.end() - e.begin();
        }
        notes.add(h.entries().size() + " tensors, " + total + " data bytes, header " + h.headerBytes() + " bytes");
        Map<String, Entry> entries = h.entries();
        problems.addAll(schemaProblems(h.metadata(), entries::get, entries.keySet()));
        Map<String, Expected> want = expected;
        if (want == null) {
            want = fromConfigJson(h.metadata().get("config"), problems, notes);
        }
        if (want != null) {
            checkExpected(want, entries, problems);
        }
        MemorySegment data = file.asSlice(h.dataOffset());
        Map<String, String> crc = checksums(h.metadata());
        if (h.metadata().containsKey(Checksums.KEY)) {
            if (crc != null) {
                notes.add("checksums: " + crc.size() + " tensors (crc32)");
            }
        } else {
            notes.add("WARNING: " + Checksums.ABSENT);
        }
        for (Entry e : entries.values()) {
            if (problems.size() >= MAX_PROBLEMS) {
                break;
            }
            MemorySegment bytes = data.asSlice(e.begin(), e.end() - e.begin());
            String stored = crc == null ? null : crc.get(e.name());
            if (stored != null) {
                String got = Checksums.crc32(bytes);
                if (!got.equals(stored)) {
                    problems.add(Checksums.damaged(e.name(), stored, got));
                }
            }
            if (e.dtype().isFloating()) {
                checkFinite(e, bytes, problems);
            }
        }
        if (problems.size() > MAX_PROBLEMS) {
            int more = problems.size() - MAX_PROBLEMS;
            problems.subList(MAX_PROBLEMS, problems.size()).clear();
            problems.add("... and " + more + " more problems");
        }
        if (h.metadata().containsKey("step")) {
            notes.add("step " + h.metadata().get("step") + ", data position " + h.metadata().get("data_position"));
        }
        return new Report(source, problems, notes);
    }

    /**
     * The checkpoint-level rules on an already structurally valid file; shared with {@link Checkpoint#load}
     * so a file that loads is one that verifies (finiteness aside).
     */
    static List<String> schemaProblems(Map<String, String> meta, Function<String, Entry> entry, Collection<String> names) {
        List<String> p = new ArrayList<>();
        if (!Checkpoint.FORMAT.equals(meta.get("format"))) {
            p.add("__metadata__.format is " + show(meta.get("format")) + ", not \"" + Checkpoint.FORMAT + "\"");
        }
        if (!Checkpoint.FORMAT_VERSION.equals(meta.get("format_version"))) {
            p.add("__metadata__.format_version is " + show(meta.get("format_version")) + ", this reader knows \""
                    + Checkpoint.FORMAT_VERSION + "\"");
        }
        String cfg = meta.get("config");
        if (cfg == null) {
            p.add("__metadata__.config is missing");
        } else {
            String why = Checkpoint.configProblem(cfg);
            if (why != null) {
                p.add("__metadata__." + why);
            }
        }
        for (String k : List.of("step", "data_position")) {
            String v = meta.get(k);
            if (v == null || !DECIMAL.matcher(v).matches()) {
                p.add("__metadata__." + k + " is " + show(v) + ", not a non-negative 64-bit decimal");
            } else {
                try {
                    Long.parseLong(v);
                } catch (NumberFormatException e) {
                    p.add("__metadata__." + k + " is " + show(v) + ", not a non-negative 64-bit decimal");
                }
            }
        }
        String sums = meta.get(Checksums.KEY);
        if (sums != null) {
            try {
                Map<String, String> crc = Checksums.decode(sums);
                for (String name : names) {
                    if (!crc.containsKey(name)) {
                        p.add("tensor " + show(name) + " has no checksum in __metadata__." + Checksums.KEY);
                    }
                }
                for (String name : crc.keySet()) {
                    if (entry.apply(name) == null) {
                        p.add("__metadata__." + Checksums.KEY + " names tensor " + show(name) + ", which the file does not hold");
                    }
                }
            } catch (IllegalArgumentException e) {
                p.add(e.getMessage());
            }
        }
        Entry rng = entry.apply(Checkpoint.RNG_STATE);
        if (rng == null) {
            p.add("tensor rng.state is missing");
        } else if (rng.dtype() != DType.I64 || rng.shape().length != 1) {
            p.add("tensor rng.state is " + rng.dtype() + " " + Arrays.toString(rng.shape()) + ", not a 1-D I64");
        }
        for (String name : names) {
            String weight = null;
            if (name.startsWith(Checkpoint.OPTIM_M)) {
                weight = name.substring(Checkpoint.OPTIM_M.length());
            } else if (name.startsWith(Checkpoint.OPTIM_V)) {
                weight = name.substring(Checkpoint.OPTIM_V.length());
            } else if (Checkpoint.isReserved(name) && !name.equals(Checkpoint.RNG_STATE)) {
                p.add("tensor " + show(name) + " uses a reserved prefix but is not an optimizer moment or rng.state");
                continue;
            } else {
                continue;
            }
            Entry m = entry.apply(name);
            Entry w = Checkpoint.isReserved(weight) ? null : entry.apply(weight);
            if (w == null) {
                p.add("tensor " + show(name) + " has no weight " + show(weight));
            } else if (!Arrays.equals(w.shape(), m.shape()) || !m.dtype().isFloating()) {
                p.add("tensor " + show(name) + " is " + m.dtype() + " " + Arrays.toString(m.shape()) + ", its weight is "
                        + w.dtype() + " " + Arrays.toString(w.shape()));
            }
        }
        return p;
    }

    /**
     * Expected weights when the config describes a language model:
     * {@code {"vocab_size": V, "num_layers": N, "block": {HspmnConfig JSON}}}. Other configs are noted
     * and their weights are checked only structurally.
     */
    /** The checksums of the metadata, or null when absent or malformed (schemaProblems reports that). */
    private static Map<String, String> checksums(Map<String, String> meta) {
        String sums = meta.get(Checksums.KEY);
        if (sums == null) {
            return null;
        }
        try {
            return Checksums.decode(sums);
        } catch (IllegalArgumentException e) {
            return null;
        }
    }

    private static Map<String, Expected> fromConfigJson(String cfg, List<String> problems, List<String> notes) {
        if (cfg == null || Checkpoint.configProblem(cfg) != null) {
            return null;
        }
        JsonObject o = JsonParser.parseString(cfg).getAsJsonObject();
        if (!o.has("block") && !o.has("vocab_size") && !o.has("num_layers")) {
            notes.add("config does not describe a language model (no block/vocab_size/num_layers): names and shapes not checked");
            return null;
        }
        try {
            int v = intField(o, "vocab_size");
            int n = intField(o, "num_layers");
            if (n > 4096) {
                throw new IllegalArgumentException("num_layers " + n + " is past 4096");
            }
            if (!(o.get("block") instanceof JsonObject b)) {
                throw new IllegalArgumentException("block is not an object");
            }
            HspmnConfig block = HspmnConfig.fromJson(b.toString()).validate();
            Map<String, Expected> m = new LinkedHashMap<>();
            LanguageModelLayout.shapes(block, v, n).forEach((k, s) -> m.put(k, new Expected(s, Set.of())));
            notes.add("config: vocab " + v + ", " + n + " layers, dim " + block.dim() + " (" + m.size() + " weights expected)");
            return m;
        } catch (RuntimeException e) {
            problems.add("__metadata__.config does not describe a valid language model: " + e.getMessage());
            return null;
        }
    }

    private static int intField(JsonObject o, String k) {
        if (!(o.get(k) instanceof JsonPrimitive p && p.isNumber())) {
            throw new IllegalArgumentException(k + " missing or not a number");
        }
        try {
            return new java.math.BigDecimal(p.getAsString()).intValueExact();
        } catch (ArithmeticException | NumberFormatException e) {
            throw new IllegalArgumentException(k + " is not a 32-bit integer");
        }
    }

    private static void checkExpected(Map<String, Expected> want, Map<String, Entry> entries, List<String> problems) {
        for (Map.Entry<String, Expected> w : want.entrySet()) {
            Entry e = entries.get(w.getKey());
            if (e == null) {
                problems.add("weight " + show(w.getKey()) + " is missing (config wants " + Arrays.toString(w.getValue().shape()) + ")");
                continue;
            }
            if (!Arrays.equals(e.shape(), w.getValue().shape())) {
                problems.add("weight " + show(e.name()) + " has shape " + Arrays.toString(e.shape()) + ", config wants "
                        + Arrays.toString(w.getValue().shape()));
            }
            Set<DType> ok = w.getValue().dtypes();
            if (ok.isEmpty() ? !e.dtype().isFloating() : !ok.contains(e.dtype())) {
                problems.add("weight " + show(e.name()) + " is " + e.dtype() + ", config wants "
                        + (ok.isEmpty() ? "a float dtype" : ok.toString()));
            }
        }
        for (String name : entries.keySet()) {
            if (!Checkpoint.isReserved(name) && !want.containsKey(name)) {
                problems.add("weight " + show(name) + " is not in the config's model");
            }
        }
    }

    private static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfLong I64 = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /** Counts NaN/Inf by exponent bits (all ones) and names the first. */
    private static void checkFinite(Entry e, MemorySegment s, List<String> problems) {
        long n = s.byteSize() / e.dtype().byteSize();
        long bad = 0;
        long first = -1;
        for (long i = 0; i < n; i++) {
            boolean nonFinite = switch (e.dtype()) {
                case BF16 -> (s.get(I16, 2 * i) & 0x7f80) == 0x7f80;
                case F32 -> (s.get(I32, 4 * i) & 0x7f800000) == 0x7f800000;
                case F64 -> (s.get(I64, 8 * i) & 0x7ff0000000000000L) == 0x7ff0000000000000L;
                default -> false;
            };
            if (nonFinite) {
                if (bad++ == 0) {
                    first = i;
                }
            }
        }
        if (bad > 0) {
            problems.add("tensor " + show(e.name()) + " has " + bad + " non-finite value" + (bad == 1 ? "" : "s")
                    + " (first at flat index " + first + ")");
        }
    }

    private static String show(String s) {
        if (s == null) {
            return "missing";
        }
        return s.length() <= 64 ? "\"" + s + "\"" : "\"" + s.substring(0, 64) + "...\" (" + s.length() + " chars)";
    }
}
