package io.hspmn.serve;

import io.hspmn.Context;
import io.hspmn.ContextOptions;
import io.hspmn.LanguageModel;
import io.hspmn.checkpoint.ModelCheckpoint;
import io.hspmn.io.InvalidSafeTensorsException;
import io.hspmn.train.TrainCheckpoint;
import io.hspmn.train.Trainer;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;

/** The service's model from a checkpoint of {@code hspmn train}. */
final class ModelLoader {
    private ModelLoader() {
    }

    /** The checkpoint file: {@code path} itself, or a training run's {@code --out} folder's checkpoint. */
    static Path resolve(Path path) {
        Path file = Files.isDirectory(path) ? path.resolve(Trainer.CHECKPOINT) : path;
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException("--ckpt " + path + ": no checkpoint at " + file);
        }
        return file;
    }

    /** The checkpoint's model, with its weights, in a context of its own. */
    static LanguageModel load(Path path, ContextOptions options) {
        Path file = resolve(path);
        TrainCheckpoint.State state;
        try {
            state = TrainCheckpoint.load(file, w -> System.err.println("serve: warning: " + w));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read checkpoint " + file + ": " + e.getMessage(), e);
        }
        Context ctx = Context.create(options);
        try {
            LanguageModel lm = LanguageModel.create(ctx, state.model(), 0L);
            ModelCheckpoint.restore(state.checkpoint(), lm, false);
            return lm;
        } catch (InvalidSafeTensorsException e) {
            ctx.close();
            throw new IllegalArgumentException("checkpoint " + file + ": " + e.getMessage(), e);
        } catch (RuntimeException e) {
            ctx.close();
            throw e;
        }
    }
}
