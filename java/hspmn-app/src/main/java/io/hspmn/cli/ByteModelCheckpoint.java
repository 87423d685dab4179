package io.hspmn.cli;

import io.hspmn.ModelConfig;
import io.hspmn.io.InvalidSafeTensorsException;
import io.hspmn.train.TrainCheckpoint;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * The {@code --ckpt DIR|FILE} of the commands that read bytes through a trained model (eval, sample): the
 * checkpoint file, loaded (warnings to {@code err}), refused with a usage error when it is missing,
 * unreadable or not a byte-level model.
 *
 * @param file  the checkpoint file (a training --out folder resolved to its checkpoint)
 * @param state what it holds
 */
record ByteModelCheckpoint(Path file, TrainCheckpoint.State state) {
    /** @param uses what the command does with bytes, for the vocabulary error ("eval scores bytes") */
    static ByteModelCheckpoint load(Args args, PrintStream err, String uses) throws IOException, UsageException {
        Path file = VerifyCommand.checkpointFile(Path.of(args.required("ckpt", "the checkpoint (or training --out folder)")));
        if (!Files.isRegularFile(file)) {
            throw new UsageException("--ckpt: no checkpoint at " + file);
        }
        TrainCheckpoint.State state;
        try {
            state = TrainCheckpoint.load(file, w -> err.println("warning: " + w));
        } catch (InvalidSafeTensorsException e) {
            throw new UsageException("--ckpt: " + e.getMessage());
        }
        ModelConfig config = state.model();
        if (config.vocabSize() != ModelConfig.BYTE_VOCAB) {
            throw new UsageException("--ckpt: the model has a vocabulary of " + config.vocabSize() + " tokens; " + uses
                    + " (256)");
        }
        return new ByteModelCheckpoint(file, state);
    }
}
