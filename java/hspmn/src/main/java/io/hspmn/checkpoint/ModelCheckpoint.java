package io.hspmn.checkpoint;

import com.google.gson.JsonParser;
import io.hspmn.Context;
import io.hspmn.LanguageModel;
import io.hspmn.ModelConfig;
import io.hspmn.Moment;
import io.hspmn.io.InvalidSafeTensorsException;
import io.hspmn.io.TensorData;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.function.Consumer;

/**
 * A {@link LanguageModel} out of a {@link Checkpoint}: its config from the checkpoint's config JSON and
 * its weights (with AdamW's moments, for a resumed run) by state_dict name. Part of the library, not of
 * the trainer, so a service that embeds the library alone can serve what {@code hspmn train} wrote.
 */
public final class ModelCheckpoint {
    private ModelCheckpoint() {
    }

    /**
     * The checkpoint's model, with its weights, made in {@code ctx}.
     *
     * @param warnings gets the warnings of {@link Checkpoint#load(Path, Consumer)} (a file without checksums)
     * @throws IOException                 unreadable file
     * @throws InvalidSafeTensorsException not a checkpoint, or one whose config or weights do not make a model
     */
    public static LanguageModel load(Context ctx, Path path, Consumer<String> warnings) throws IOException {
        Checkpoint c = Checkpoint.load(path, warnings);
        LanguageModel model = LanguageModel.create(ctx, config(path, c), 0L);
        try {
            restore(c, model, false);
            return model;
        } catch (IOException | RuntimeException e) {
            model.close();
            throw e;
        }
    }

    /** The model the checkpoint's config JSON describes ({@code vocab_size, num_layers, block}). */
    public static ModelConfig config(Path path, Checkpoint c) throws InvalidSafeTensorsException {
        try {
            return ModelConfig.fromJsonObject(JsonParser.parseString(c.configJson()).getAsJsonObject());
        } catch (RuntimeException e) {
            throw new InvalidSafeTensorsException(path + ": the config does not describe a language model: " + e.getMessage());
        }
    }

    /**
     * Loads the weights (and, with {@code moments}, AdamW's m and v) into {@code model}; every parameter
     * must be present with its shape. F32 weights load exactly; BF16 or F64 ones are converted.
     */
    public static void restore(Checkpoint c, LanguageModel model, boolean moments) throws InvalidSafeTensorsException {
        for (String name : model.paramNames()) {
            long[] shape = model.paramShape(name);
            model.setParam(name, floats("weight", name, c.weights().get(name), shape));
            if (moments) {
                model.setMoment(name, Moment.M, floats("optim.m", name, c.optimM().get(name), shape));
                model.setMoment(name, Moment.V, floats("optim.v", name, c.optimV().get(name), shape));
            }
        }
    }

    private static float[] floats(String what, String name, TensorData t, long[] shape) throws InvalidSafeTensorsException {
        if (t == null) {
            throw new InvalidSafeTensorsException("the checkpoint has no " + what + " " + name);
        }
        if (!Arrays.equals(t.shape(), shape) || !t.dtype().isFloating()) {
            throw new InvalidSafeTensorsException("the checkpoint's " + what + " " + name + " is " + t + ", the model's is "
                    + Arrays.toString(shape));
        }
        float[] v = new float[Math.toIntExact(t.numel())];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) t.get(i);
        }
        return v;
    }
}
