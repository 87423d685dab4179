package io.hspmn.checkpoint;

import com.google.gson.JsonElement;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import com.google.gson.Strictness;
import com.google.gson.stream.JsonReader;
import com.google.gson.stream.JsonToken;
import io.hspmn.io.InvalidSafeTensorsException;
import io.hspmn.io.SafeTensors;
import io.hspmn.io.SafeTensorsHeader;
import io.hspmn.io.SafeTensorsWriter;
import io.hspmn.io.TensorData;

import java.io.IOException;
import java.io.StringReader;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.function.Consumer;

/**
 * A training checkpoint as one safetensors file. Weights keep their PyTorch state_dict names so the
 * reference can {@code load_state_dict} them; AdamW's moments live beside them as {@code optim.m.<name>}
 * and {@code optim.v.<name>}; the RNG state is the I64 tensor {@code rng.state}. The scalars go in
 * {@code __metadata__} (strings, as the format requires): {@code format}, {@code format_version},
 * {@code config} (JSON), {@code step}, {@code data_position}, and {@code tensor_crc32}: every tensor's
 * checksum ({@link Checksums}), checked by {@link #load} and {@link CheckpointVerifier}. A file without
 * checksums (written before they existed) still loads, with a warning.
 *
 * @param configJson    the model/training config as a JSON object
 * @param step          optimizer steps taken
 * @param dataPosition  where the data loader resumes (its own unit, e.g. a sample index)
 * @param rngState      the generator's state words (e.g. Philox seed and offset)
 * @param weights       by state_dict name, in state_dict order
 * @param optimM        AdamW first moments by weight name (shape of the weight)
 * @param optimV        AdamW second moments by weight name (shape of the weight)
 */
public record Checkpoint(String configJson, long step, long dataPosition, long[] rngState,
                         Map<String, TensorData> weights, Map<String, TensorData> optimM,
                         Map<String, TensorData> optimV) {
    public static final String FORMAT = "hspmn.checkpoint";
    public static final String FORMAT_VERSION = "1";
    public static final String OPTIM_M = "optim.m.";
    public static final String OPTIM_V = "optim.v.";
    public static final String RNG_STATE = "rng.state";

    public Checkpoint {
        Objects.requireNonNull(configJson);
        String cfgProblem = configProblem(configJson);
        if (cfgProblem != null) {
            throw new IllegalArgumentException(cfgProblem);
        }
        if (step < 0 || dataPosition < 0) {
            throw new IllegalArgumentException("step and data position must be >= 0, got " + step + ", " + dataPosition);
        }
        rngState = rngState.clone();
        weights = Collections.unmodifiableMap(new LinkedHashMap<>(weights));
        optimM = Collections.unmodifiableMap(new LinkedHashMap<>(optimM));
        optimV = Collections.unmodifiableMap(new LinkedHashMap<>(optimV));
        for (String name : weights.keySet()) {
            if (isReserved(name)) {
                throw new IllegalArgumentException("weight name " + name + " uses a reserved prefix (optim., rng.)");
            }
        }
        checkMoments("optim.m", optimM, weights);
        checkMoments("optim.v", optimV, weights);
    }

    private static void checkMoments(String what, Map<String, TensorData> moments, Map<String, TensorData> weights) {
        for (Map.Entry<String, TensorData> e : moments.entrySet()) {
            TensorData w = weights.get(e.getKey());
            if (w == null) {
                throw new IllegalArgumentException(what + "." + e.getKey() + " has no weight " + e.getKey());
            }
            if (!Arrays.equals(w.shape(), e.getValue().shape()) || !e.getValue().dtype().isFloating()) {
                throw new IllegalArgumentException(what + "." + e.getKey() + " is " + e.getValue() + ", the weight is " + w);
            }
        }
    }

    static boolean isReserved(String name) {
        return name.startsWith("optim.") || name.startsWith("rng.");
    }

    /** Null if {@code json} is one strict JSON object, else why not. */
    static String configProblem(String json) {
        try {
            JsonReader r = new JsonReader(new StringReader(json));
            r.setStrictness(Strictness.STRICT);
            // parseReader keeps an explicitly strict reader strict (it relaxes only the legacy default).
            JsonElement e = JsonParser.parseReader(r);
            if (r.peek() != JsonToken.END_DOCUMENT) {
                return "config has data after its JSON value";
            }
            return e.isJsonObject() ? null : "config is not a JSON object";
        } catch (JsonParseException | IOException e) {
            return "config is not valid JSON: " + SafeTensorsHeader.jsonError(e);
        }
    }

    @Override
    public long[] rngState() {
        return rngState.clone();
    }

    /** Writes the checkpoint atomically (see {@link SafeTensorsWriter#write}). */
    public void save(Path path) throws IOException {
        writer().write(path);
    }

    /** The writer {@link #save} uses, exposed so tests can hook its progress. */
    public SafeTensorsWriter writer() {
        Map<String, TensorData> all = new LinkedHashMap<>(weights);
        optimM.forEach((k, v) -> all.put(OPTIM_M + k, v));
        optimV.forEach((k, v) -> all.put(OPTIM_V + k, v));
        all.put(RNG_STATE, TensorData.i64(new long[] {rngState.length}, rngState));
        Map<String, MemorySegment> bytes = new LinkedHashMap<>();
        all.forEach((k, v) -> bytes.put(k, v.bytes()));
        SafeTensorsWriter w = new SafeTensorsWriter()
                .metadata("format", FORMAT)
                .metadata("format_version", FORMAT_VERSION)
                .metadata("config", configJson)
                .metadata("step", Long.toString(step))
                .metadata("data_position", Long.toString(dataPosition))
                .metadata(Checksums.KEY, Checksums.encode(bytes));
        all.forEach(w::add);
        return w;
    }

    /**
     * Reads a checkpoint into memory (the file is closed on return). The file must pass the structural
     * and checkpoint checks of {@link CheckpointVerifier} (finiteness aside: a diverged run's state can
     * still be loaded and inspected), and every tensor must match its checksum ("damaged tensor X" when
     * one does not); the message names the first problem. A file without checksums loads with a warning
     * through the {@link System.Logger} of this class.
     */
    public static Checkpoint load(Path path) throws IOException {
        return load(path, w -> System.getLogger(Checkpoint.class.getName()).log(System.Logger.Level.WARNING, w));
    }

    /** {@link #load(Path)}, handing warnings (a file without checksums) to {@code warnings}. */
    public static Checkpoint load(Path path, Consumer<String> warnings) throws IOException {
        try (SafeTensors st = SafeTensors.open(path)) {
            List<String> problems = CheckpointVerifier.schemaProblems(st.metadata(),
                    name -> st.contains(name) ? st.entry(name) : null, st.names());
            if (!problems.isEmpty()) {
                throw new InvalidSafeTensorsException("not a valid checkpoint " + path + ": " + problems.getFirst());
            }
            String sums = st.metadata().get(Checksums.KEY);
            Map<String, String> crc = sums == null ? null : Checksums.decode(sums); // schemaProblems checked it
            if (crc == null) {
                warnings.accept(path + ": " + Checksums.ABSENT);
            }
            Arena arena = Arena.ofAuto();
            Map<String, TensorData> weights = new LinkedHashMap<>();
            Map<String, TensorData> m = new LinkedHashMap<>();
            Map<String, TensorData> v = new LinkedHashMap<>();
            long[] rng = new long[0];
            for (String name : st.names()) {
                SafeTensors.Entry e = st.entry(name);
                MemorySegment copy = arena.allocate(Math.max(1, e.end() - e.begin()), 8).asSlice(0, e.end() - e.begin());
                copy.copyFrom(st.bytes(name));
                if (crc != null) {
                    String got = Checksums.crc32(copy);
                    if (!got.equals(crc.get(name))) {
                        throw new InvalidSafeTensorsException(path + ": " + Checksums.damaged(name, crc.get(name), got));
                    }
                }
                TensorData t = new TensorData(e.dtype(), e.shape(), copy);
                if (name.equals(RNG_STATE)) {
                    rng = st.longs(name);
                } else if (name.startsWith(OPTIM_M)) {
                    m.put(name.substring(OPTIM_M.length()), t);
                } else if (name.startsWith(OPTIM_V)) {
                    v.put(name.substring(OPTIM_V.length()), t);
                } else {
                    weights.put(name, t);
                }
            }
            Map<String, String> meta = st.metadata();
            return new Checkpoint(meta.get("config"), Long.parseLong(meta.get("step")),
                    Long.parseLong(meta.get("data_position")), rng, weights, m, v);
        }
    }

    /** Same config, counters, RNG state and tensors (bytes compared). */
    public boolean contentEquals(Checkpoint o) {
        return configJson.equals(o.configJson) && step == o.step && dataPosition == o.dataPosition
                && Arrays.equals(rngState, o.rngState) && sameTensors(weights, o.weights)
                && sameTensors(optimM, o.optimM) && sameTensors(optimV, o.optimV);
    }

    private static boolean sameTensors(Map<String, TensorData> a, Map<String, TensorData> b) {
        if (!List.copyOf(a.keySet()).equals(List.copyOf(b.keySet()))) {
            return false;
        }
        for (Map.Entry<String, TensorData> e : a.entrySet()) {
            if (!e.getValue().contentEquals(b.get(e.getKey()))) {
                return false;
            }
        }
        return true;
    }
}
