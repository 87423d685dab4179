package io.hspmn.train;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.hspmn.LanguageModel;
import io.hspmn.ModelConfig;
import io.hspmn.Moment;
import io.hspmn.checkpoint.Checkpoint;
import io.hspmn.checkpoint.ModelCheckpoint;
import io.hspmn.data.SamplerState;
import io.hspmn.io.InvalidSafeTensorsException;
import io.hspmn.io.TensorData;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.Consumer;

/**
 * A training run's state as an {@link Checkpoint}: the float32 master weights under their state_dict
 * names, AdamW's m and v, the optimizer steps taken, and in {@code rng.state} the batch sampler's
 * position {@code [seed, epoch, index, training split bytes]} (the routing noise needs no state: it is
 * keyed by the step). The config JSON is the model's ({@code vocab_size, num_layers, block}, what the
 * reference's {@code load_lm_checkpoint} reads) plus {@code "training"}: the options a resumed run needs
 * ({@link TrainOptions#toStoredJson()}). {@code data_position} counts the training windows drawn by the
 * whole run (all ranks; steps x grad-accum x global batch while the global batch stays the same).
 */
public final class TrainCheckpoint {
    /** Index of each word in {@code rng.state}. */
    static final int RNG_SEED = 0;
    static final int RNG_EPOCH = 1;
    static final int RNG_INDEX = 2;
    static final int RNG_SPLIT_BYTES = 3;
    static final int RNG_WORDS = 4;

    /**
     * A checkpoint read back.
     *
     * @param options the stored options with the checkpoint's model; session options at their defaults
     */
    public record State(Checkpoint checkpoint, ModelConfig model, TrainOptions options, long step,
                        long[] rngState) {
        /** The sampler position the run continues from. */
        public SamplerState sampler(int batch, int seqLen) {
            return new SamplerState(rngState[RNG_SEED], true, batch, seqLen, rngState[RNG_SPLIT_BYTES],
                    rngState[RNG_EPOCH], rngState[RNG_INDEX]);
        }
    }

    private TrainCheckpoint() {
    }

    /** The config JSON stored in a checkpoint of a run with these options. */
    public static String configJson(ModelConfig model, TrainOptions options) {
        JsonObject o = model.toJsonObject();
        o.add("training", options.toStoredJson());
        return o.toString();
    }

    /**
     * The run's state now, as a checkpoint (copies everything out of the model).
     *
     * @param windows the training windows the run has drawn (every rank), the checkpoint's data_position
     */
    public static Checkpoint capture(LanguageModel model, TrainOptions options, long step, SamplerState sampler,
                                     long windows) {
        Map<String, TensorData> weights = new LinkedHashMap<>();
        Map<String, TensorData> m = new LinkedHashMap<>();
        Map<String, TensorData> v = new LinkedHashMap<>();
        for (String name : model.paramNames()) {
            long[] shape = model.paramShape(name);
            weights.put(name, TensorData.f32(shape, model.param(name)));
            m.put(name, TensorData.f32(shape, model.moment(name, Moment.M)));
            v.put(name, TensorData.f32(shape, model.moment(name, Moment.V)));
        }
        long[] rng = new long[RNG_WORDS];
        rng[RNG_SEED] = sampler.seed();
        rng[RNG_EPOCH] = sampler.epoch();
        rng[RNG_INDEX] = sampler.index();
        rng[RNG_SPLIT_BYTES] = sampler.splitBytes();
        return new Checkpoint(configJson(model.config(), options), step, windows, rng, weights, m, v);
    }

    /**
     * What a rank other than 0 does while rank 0 runs {@link #capture} on a model whose optimizer is
     * sharded: the same collective moment reads, in the same order, results dropped.
     */
    public static void joinCapture(LanguageModel model) {
        for (String name : model.paramNames()) {
            model.moment(name, Moment.M);
            model.moment(name, Moment.V);
        }
    }

    /**
     * Reads a checkpoint a run wrote.
     *
     * @throws IOException          unreadable file
     * @throws InvalidSafeTensorsException not a checkpoint, or one without training options
     */
    public static State load(Path path) throws IOException {
        if (!Files.isRegularFile(path)) {
            throw new java.nio.file.NoSuchFileException(path.toString(), null, "no checkpoint here");
        }
        return state(path, Checkpoint.load(path));
    }

    /** {@link #load(Path)}, handing warnings (a checkpoint without checksums) to {@code warnings}. */
    public static State load(Path path, Consumer<String> warnings) throws IOException {
        if (!Files.isRegularFile(path)) {
            throw new java.nio.file.NoSuchFileException(path.toString(), null, "no checkpoint here");
        }
        return state(path, Checkpoint.load(path, warnings));
    }

    private static State state(Path path, Checkpoint c) throws IOException {
        ModelConfig model = ModelCheckpoint.config(path, c);
        JsonObject cfg = JsonParser.parseString(c.configJson()).getAsJsonObject();
        TrainOptions.Builder b = TrainOptions.builder();
        JsonElement training = cfg.get("training");
        if (training instanceof JsonObject t) {
            try {
                TrainOptions.applyStored(b, t);
            } catch (IllegalArgumentException e) {
                throw new InvalidSafeTensorsException(path + ": " + e.getMessage());
            }
        }
        TrainOptions options = b.build().withModel(model).build();
        long[] rng = c.rngState();
        if (training != null && rng.length != RNG_WORDS) {
            throw new InvalidSafeTensorsException(path + ": rng.state has " + rng.length + " words, a training checkpoint "
                    + RNG_WORDS + " (seed, epoch, index, split bytes)");
        }
        return new State(c, model, options, c.step(), rng);
    }

    /** Whether the checkpoint holds training options (a run's checkpoint rather than bare weights). */
    public static boolean hasTrainingOptions(State s) {
        return JsonParser.parseString(s.checkpoint().configJson()).getAsJsonObject().get("training") instanceof JsonObject;
    }
}
