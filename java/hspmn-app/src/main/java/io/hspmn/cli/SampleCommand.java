package io.hspmn.cli;

import io.hspmn.Backend;
import io.hspmn.Context;
import io.hspmn.ContextOptions;
import io.hspmn.DType;
import io.hspmn.LanguageModel;
import io.hspmn.MemoryKind;
import io.hspmn.ModelConfig;
import io.hspmn.Tensor;
import io.hspmn.checkpoint.ModelCheckpoint;
import io.hspmn.io.InvalidSafeTensorsException;
import io.hspmn.train.TrainCheckpoint;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Locale;
import java.util.Set;

/** {@code hspmn sample}: greedy continuation of a prompt; see {@link #help()}. */
final class SampleCommand {
    private SampleCommand() {
    }

    static String help() {
        return """
                usage: hspmn sample --ckpt DIR|FILE --prompt TEXT [--max-new N] [--backend auto|cpu|cuda] [--threads N]

                Loads the model of a checkpoint (a training --out folder or a checkpoint file) and continues TEXT
                greedily: each new byte is the most likely one after everything so far (the whole prefix is run
                again for every byte, so this is for trying a model out, not for speed). Prints the prompt and the
                continuation as they are, bytes included that are not whole UTF-8 characters yet.

                options (default in brackets):
                  --ckpt DIR|FILE     checkpoint, or the --out folder of a training run
                  --prompt TEXT       the start of the text (UTF-8, at least one byte)
                  --max-new N         bytes to generate [200]
                  --backend B         auto, cpu or cuda [auto]
                  --threads N         CPU worker threads, 0 for all cores [0]
                """;
    }

    static int run(String[] argv, PrintStream out, PrintStream err) throws UsageException, IOException {
        Args args = Args.parse("sample", argv, Set.of("ckpt", "prompt", "max-new", "backend", "threads"), Set.of());
        if (args.help) {
            out.print(help());
            return Main.OK;
        }
        if (!args.positional.isEmpty()) {
            throw new UsageException("unexpected argument '" + args.positional.getFirst() + "' (options start with --)");
        }
        Path ckpt = VerifyCommand.checkpointFile(Path.of(args.required("ckpt", "the checkpoint (or training --out folder)")));
        byte[] prompt = args.required("prompt", "the text to continue").getBytes(StandardCharsets.UTF_8);
        if (prompt.length == 0) {
            throw new UsageException("--prompt is empty: give at least one character to continue");
        }
        int maxNew = args.intValue("max-new", "200", 0);
        int threads = args.intValue("threads", "0", 0);
        Backend backend = switch (args.get("backend", "auto").toLowerCase(Locale.ROOT)) {
            case "auto" -> Backend.AUTO;
            case "cpu" -> Backend.CPU;
            case "cuda" -> Backend.CUDA;
            default -> throw new UsageException("--backend: '" + args.get("backend", "") + "' is not auto, cpu or cuda");
        };
        if (!Files.isRegularFile(ckpt)) {
            throw new UsageException("--ckpt: no checkpoint at " + ckpt);
        }
        TrainCheckpoint.State state;
        try {
            state = TrainCheckpoint.load(ckpt, w -> err.println("warning: " + w));
        } catch (InvalidSafeTensorsException e) {
            throw new UsageException("--ckpt: " + e.getMessage());
        }
        ModelConfig config = state.model();
        if (config.vocabSize() != ModelConfig.BYTE_VOCAB) {
            throw new UsageException("--ckpt: the model has a vocabulary of " + config.vocabSize()
                    + " tokens; sample reads and writes bytes (256)");
        }
        byte[] text = Arrays.copyOf(prompt, prompt.length + maxNew);
        try (Context ctx = Context.create(ContextOptions.defaults().withBackend(backend).withNumThreads(threads));
             LanguageModel model = LanguageModel.create(ctx, config, 0)) {
            ModelCheckpoint.restore(state.checkpoint(), model, false);
            out.write(prompt);
            out.flush();
            MemoryKind mem = ctx.backend() == Backend.CUDA ? MemoryKind.DEVICE : MemoryKind.HOST;
            int n = prompt.length;
            for (int k = 0; k < maxNew; k++, n++) {
                int[] tokens = new int[n];
                for (int i = 0; i < n; i++) {
                    tokens[i] = text[i] & 0xFF;
                }
                float[] logits;
                try (Tensor host = Tensor.ofInts(ctx, tokens, 1, n);
                     Tensor t = mem == MemoryKind.HOST ? null : Tensor.create(ctx, DType.I32, mem, 1, n)) {
                    if (t != null) {
                        t.copyFrom(host);
                    }
                    logits = model.logits(t != null ? t : host);
                }
                int next;
                try {
                    next = argmax(logits);
                } catch (IllegalStateException e) {
                    out.println();
                    out.flush();
                    err.println("error: after " + k + " generated byte" + (k == 1 ? "" : "s") + ", " + e.getMessage()
                            + ": the checkpoint's weights are damaged or have diverged (hspmn verify " + ckpt + ")");
                    return Main.FAILED;
                }
                text[n] = (byte) next;
                out.write(text[n]);
                out.flush();
            }
            out.println();
        } catch (InvalidSafeTensorsException e) {
            throw new UsageException("--ckpt: " + e.getMessage());
        }
        return Main.OK;
    }

    /**
     * The index of the largest logit; the lowest such index on ties.
     *
     * @throws IllegalStateException when a logit is NaN or infinite (a broken model: there is no largest)
     */
    static int argmax(float[] logits) {
        int best = 0;
        for (int i = 0; i < logits.length; i++) {
            if (!Float.isFinite(logits[i])) {
                throw new IllegalStateException("the model's logits are not finite (" + logits[i] + " for byte " + i + ")");
            }
            if (logits[i] > logits[best]) {
                best = i;
            }
        }
        return best;
    }
}
