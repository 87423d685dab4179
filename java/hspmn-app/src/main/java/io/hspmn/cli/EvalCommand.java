package io.hspmn.cli;

import com.google.gson.JsonObject;
import io.hspmn.Backend;
import io.hspmn.Context;
import io.hspmn.ContextOptions;
import io.hspmn.LanguageModel;
import io.hspmn.ModelConfig;
import io.hspmn.checkpoint.ModelCheckpoint;
import io.hspmn.data.ByteCorpus;
import io.hspmn.data.CorpusSplit;
import io.hspmn.eval.HeldOutEval;
import io.hspmn.eval.HeldOutResult;
import io.hspmn.metrics.JsonFile;
import io.hspmn.io.InvalidSafeTensorsException;
import io.hspmn.train.TrainCheckpoint;
import io.hspmn.train.TrainOptions;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Set;

/** {@code hspmn eval}: see {@link #help()}. */
final class EvalCommand {
    private EvalCommand() {
    }

    static String help() {
        return """
                usage: hspmn eval --ckpt DIR|FILE [--data PATH] [--val-fraction F] [--seq-len S] [--batch B]
                                  [--backend auto|cpu|cuda] [--threads N] [--json FILE]

                Scores the whole held-out text with a trained checkpoint: bits per byte over every byte of the
                validation split after its first, each predicted once, in non-overlapping windows of the context
                (each window's first prediction sees one byte of context, its last S; the bytes left after the
                whole windows are one shorter last window); each layer's routed fraction in evaluation mode (no
                noise); tokens per second. The split is the training run's (the last F of every file; F = 0.1 is
                nanoGPT's 90 / 10 split). Prints a summary; --json also writes it as JSON.

                options (default in brackets):
                  --ckpt DIR|FILE     checkpoint, or the --out folder of a training run
                  --data PATH         the corpus [the one the checkpoint was trained on]
                  --val-fraction F    held-out share of every file [the checkpoint's]
                  --seq-len S         context of each window [the checkpoint's --seq-len]
                  --batch B           windows per forward [the checkpoint's --batch]
                  --backend B         auto, cpu or cuda [auto]
                  --threads N         CPU worker threads, 0 for all cores [0]
                  --json FILE         also write the result as JSON
                """;
    }

    static int run(String[] argv, PrintStream out, PrintStream err) throws UsageException, IOException {
        Args args = Args.parse("eval", argv,
                Set.of("ckpt", "data", "val-fraction", "seq-len", "batch", "backend", "threads", "json"), Set.of());
        if (args.help) {
            out.print(help());
            return Main.OK;
        }
        args.noPositional();
        ByteModelCheckpoint loaded = ByteModelCheckpoint.load(args, err, "eval scores bytes");
        Path ckpt = loaded.file();
        TrainCheckpoint.State state = loaded.state();
        ModelConfig config = state.model();
        // Without stored training options there is no run to take the split and context from: they must be given.
        boolean stored = TrainCheckpoint.hasTrainingOptions(state);
        TrainOptions run = state.options();
        String dataArg = args.get("data", stored && run.data() != null ? run.data().toString() : null);
        if (dataArg == null) {
            throw new UsageException("--data is required: the checkpoint does not record the corpus it was trained on");
        }
        double valFraction = fraction(args.get("val-fraction", stored ? Double.toString(run.valFraction()) : null));
        if (!stored && !args.options.containsKey("seq-len")) {
            needs("seq-len");
        }
        int seqLen = args.intValue("seq-len", Integer.toString(run.seqLen()), 1);
        int batch = args.intValue("batch", stored ? Integer.toString(run.batch()) : "8", 1);
        int threads = args.intValue("threads", "0", 0);
        Backend backend = args.backend();
        Path data = Path.of(dataArg);
        try (ByteCorpus corpus = ByteCorpus.open(data);
             Context ctx = Context.create(ContextOptions.defaults().withBackend(backend).withNumThreads(threads));
             LanguageModel model = LanguageModel.create(ctx, config, 0)) {
            CorpusSplit val = corpus.split(valFraction).validation();
            if (val.size() < 2) {
                throw new UsageException("--val-fraction " + valFraction + " leaves " + val.size() + " validation bytes in "
                        + data + ": at least 2 are needed");
            }
            ModelCheckpoint.restore(state.checkpoint(), model, false);
            HeldOutResult r;
            try {
                r = HeldOutEval.evaluate(model, val, seqLen, batch, null);
            } catch (IllegalStateException e) {
                err.println("error: " + e.getMessage() + " (hspmn verify " + ckpt + ")");
                return Main.FAILED;
            }
            double entropy = val.unigramEntropyBits();
            int tail = (int) (r.scoredBytes() % seqLen);
            out.printf(Locale.ROOT, "eval: %s (step %d), %d layers, dim %d, rho %.2f, on %s%n", ckpt, state.step(),
                    config.numLayers(), config.block().dim(), config.block().sparsityK(), ctx.backend());
            out.printf(Locale.ROOT, "data %s: validation split %,d bytes (--val-fraction %s); scored %,d bytes in %,d "
                            + "windows of %d%s, %d per forward%n", data, r.splitBytes(), Double.toString(valFraction),
                    r.scoredBytes(), r.windows(), seqLen, tail > 0 ? " (the last " + tail + ")" : "", batch);
            out.printf(Locale.ROOT, "validation %.4f bits/byte (%.4f nats/byte; unigram entropy %.3f)%n", r.bitsPerByte(),
                    r.natsPerByte(), entropy);
            out.printf(Locale.ROOT, "routed fraction per layer (evaluation mode, no noise) %s, target %.2f%n",
                    TrainCommand.fractions(r.routedFraction()), config.block().sparsityK());
            out.printf(Locale.ROOT, "%,.0f tok/s (%.2f s)%n", r.tokensPerSecond(), r.seconds());
            String json = args.options.get("json");
            if (json != null) {
                JsonObject o = r.toJsonObject();
                o.addProperty("checkpoint", ckpt.toString());
                o.addProperty("step", state.step());
                o.addProperty("data", data.toString());
                o.addProperty("val_fraction", valFraction);
                o.addProperty("unigram_entropy_bits", entropy);
                o.add("model", config.toJsonObject());
                if (stored) {
                    o.add("training", run.toStoredJson());
                }
                JsonFile.write(Path.of(json), o);
                out.println("wrote " + json);
            }
            return Main.OK;
        } catch (InvalidSafeTensorsException e) {
            throw new UsageException("--ckpt: " + e.getMessage());
        } catch (IllegalArgumentException e) {
            throw new UsageException(e.getMessage());
        }
    }

    private static void needs(String option) throws UsageException {
        throw new UsageException("--" + option + " is required: the checkpoint does not record its training options");
    }

    private static double fraction(String v) throws UsageException {
        if (v == null) {
            needs("val-fraction");
        }
        try {
            double f = Double.parseDouble(v.trim());
            if (!(f > 0 && f < 1)) {
                throw new UsageException("--val-fraction (" + v + ") must be in (0, 1)");
            }
            return f;
        } catch (NumberFormatException e) {
            throw new UsageException("--val-fraction: '" + v + "' is not a number");
        }
    }
}
