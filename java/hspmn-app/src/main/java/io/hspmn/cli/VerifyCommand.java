package io.hspmn.cli;

import io.hspmn.checkpoint.CheckpointVerifier;
import io.hspmn.checkpoint.Report;
import io.hspmn.train.Trainer;

import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;

/** {@code hspmn verify CKPT...}: {@link CheckpointVerifier}'s report of each; exit 1 when any has problems. */
final class VerifyCommand {
    private VerifyCommand() {
    }

    static String help() {
        return """
                usage: hspmn verify CKPT...

                Checks each checkpoint without trusting it: the safetensors structure (header bounds, strict JSON,
                dtypes, offsets), the checkpoint fields (format, config, step, data position, rng.state, optimizer
                moments matching their weights), every weight's name and shape against the model the config
                describes, every tensor's data against the checksum written with it (a checkpoint from before
                checksums gets a warning), and that every float value is finite. CKPT is a checkpoint file, or a
                training --out folder (its checkpoint.safetensors). Prints one report per file; exit status 1 when
                any has a problem, 0 when all are valid.
                """;
    }

    static int run(String[] argv, PrintStream out, PrintStream err) throws UsageException {
        Args args = Args.parse("verify", argv, Set.of(), Set.of());
        if (args.help) {
            out.print(help());
            return Main.OK;
        }
        if (args.positional.isEmpty()) {
            throw new UsageException("verify needs a checkpoint file (or a training --out folder)");
        }
        boolean ok = true;
        for (String p : args.positional) {
            Report r = CheckpointVerifier.fromConfig().verify(checkpointFile(Path.of(p)));
            out.print(r.render());
            ok &= r.ok();
        }
        return ok ? Main.OK : Main.FAILED;
    }

    /** A folder stands for the checkpoint a training run keeps in it. */
    static Path checkpointFile(Path p) {
        return Files.isDirectory(p) ? p.resolve(Trainer.CHECKPOINT) : p;
    }
}
