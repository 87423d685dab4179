package io.hspmn.cli;

import io.hspmn.io.InvalidSafeTensorsException;
import io.hspmn.train.RankFailedException;
import io.hspmn.train.TrainCheckpoint;
import io.hspmn.train.TrainOptions;
import io.hspmn.train.Trainer;
import io.hspmn.train.TrainingDivergedException;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/** {@code hspmn train}: see {@link #help()}. */
final class TrainCommand {
    private TrainCommand() {
    }

    static String help() {
        TrainOptions defaults = TrainOptions.builder().build();
        StringBuilder b = new StringBuilder("""
                usage: hspmn train --data PATH --out DIR [options]
                       hspmn train --out DIR --resume [--steps N] [--stop-after N] [--backend B] ...

                Trains a byte-level HSPMN language model (vocabulary 256) on UTF-8 text. Writes into --out:
                  checkpoint.safetensors  float32 master weights (PyTorch state_dict names), AdamW moments, step,
                                          sampler position, model config + training options (every --save-every
                                          steps and at the end; replaced atomically)
                  metrics.jsonl           one JSON line per step: loss, ce, aux, bits_per_byte, routed_fraction,
                                          lr, grad_norm, tok_s, memory_bytes; val_* on validation steps
                  report.html             loss, bits-per-byte and routed-fraction charts (self-contained)
                --resume continues the run in --out exactly where its checkpoint left it (same batches, routing
                noise and schedule); options that define the run cannot change then, --steps and the evaluation,
                saving and session options can.

                Several GPUs (data parallel): --gpus N trains N ranks in this process, one thread, context and model
                replica each (CUDA devices 0..N-1; with --backend cpu, N CPU ranks). --batch is per rank: the global
                batch is N x --batch (x --nodes), and N ranks see exactly the windows one rank with the global batch
                would. A checkpoint resumes on any --gpus: the global batch stays and is split over the new ranks
                (it must divide); a --batch given then sets the rows per rank, and if that changes the global batch
                the sampler goes on from the same window, grouping the windows into the new batch size. Several hosts:
                the same command on each with --nodes M --node-rank R --comm-id-file PATH (or HSPMN_COMM_ID).

                options (default in brackets):
                """);
        for (TrainOptions.Option o : TrainOptions.OPTIONS) {
            String left = "  --" + o.name() + (o.isFlag() ? "" : " " + o.arg());
            String value = o.get().apply(defaults);
            String def = o.isFlag() || value == null || o.name().equals("data") || o.name().equals("out") ? "" : " [" + value + "]";
            if (o.name().equals("aux-warmup")) {
                def = "";
            }
            b.append(String.format(Locale.ROOT, "%-32s %s%s%n", left, o.help(), def));
        }
        return b.toString();
    }

    static int run(String[] argv, PrintStream out, PrintStream err) throws UsageException, IOException {
        Set<String> valued = new HashSet<>();
        Set<String> flags = new HashSet<>();
        for (TrainOptions.Option o : TrainOptions.OPTIONS) {
            (o.isFlag() ? flags : valued).add(o.name());
        }
        Args args = Args.parse("train", argv, valued, flags);
        if (args.help) {
            out.print(help());
            return Main.OK;
        }
        if (!args.positional.isEmpty()) {
            throw new UsageException("unexpected argument '" + args.positional.getFirst() + "' (options start with --)");
        }
        TrainOptions options = resolve(args.options);
        try (Trainer trainer = Trainer.open(options, out)) {
            Trainer.Result r = trainer.run();
            if (r.lastEval() != null) {
                // --stop-after may end between validations: then say where the figure was measured
                String at = r.lastEvalStep() == r.step()
                        ? String.format(Locale.ROOT, "step %d/%d: validation", r.step(), options.steps())
                        : String.format(Locale.ROOT, "stopped at step %d/%d; last validation (at step %d)", r.step(),
                                options.steps(), r.lastEvalStep());
                out.printf(Locale.ROOT, "%s %.4f bits/byte (unigram entropy %.3f), routed fraction "
                                + "(no noise) %s, target %.2f%n", at, r.lastEval().bitsPerByte(),
                        r.validationEntropy(), fractions(r.lastEval().routedFraction()), trainer.model().config().block().sparsityK());
            } else {
                out.printf(Locale.ROOT, "stopped at step %d/%d%n", r.step(), options.steps());
            }
            if (r.stoppedEarly()) {
                out.printf(Locale.ROOT, "stopped early at step %d/%d (--early-stop %d): the best validation, %.4f bits/byte, "
                                + "was at step %d%n", r.step(), options.steps(), options.earlyStop(), r.bestValidation(),
                        r.stoppedEarlyBest());
            }
            if (r.skippedSteps() > 0) {
                out.printf(Locale.ROOT, "%d step(s) skipped for a non-finite gradient norm%n", r.skippedSteps());
            }
            if (trainer.writesOutput()) {
                out.printf("wrote %s, %s, %s%n", r.checkpoint(), r.metrics(), r.report());
            } else {
                out.printf(Locale.ROOT, "node %d done; node 0 wrote %s%n", options.parallel().nodeRank(), options.out());
            }
            return Main.OK;
        } catch (TrainingDivergedException | RankFailedException e) {
            err.println("error: " + e.getMessage());
            return Main.FAILED;
        } catch (IllegalArgumentException e) {
            throw new UsageException(e.getMessage());
        }
    }

    /** The options of this command line; for --resume, the checkpoint's changed by what is given. */
    static TrainOptions resolve(Map<String, String> given) throws UsageException, IOException {
        try {
            if (given.containsKey("resume")) {
                String out = given.get("out");
                if (out == null) {
                    throw new UsageException("--resume needs --out: the folder holding the run to continue");
                }
                Path ckpt = Path.of(out).resolve(Trainer.CHECKPOINT);
                if (!Files.isRegularFile(ckpt)) {
                    throw new UsageException("--resume: there is no checkpoint to continue in " + out + " (looked for " + ckpt + ")");
                }
                TrainCheckpoint.State state;
                try {
                    state = TrainCheckpoint.load(ckpt, w -> { }); // Trainer.open loads it again and warns
                } catch (InvalidSafeTensorsException e) {
                    throw new UsageException("--resume: " + ckpt + " is not a training checkpoint: " + e.getMessage());
                }
                if (!TrainCheckpoint.hasTrainingOptions(state)) {
                    throw new UsageException("--resume: " + ckpt + " holds weights but no training options");
                }
                return TrainOptions.forResume(state.options(), given).validate();
            }
            TrainOptions.Builder b = TrainOptions.builder();
            for (Map.Entry<String, String> e : given.entrySet()) {
                b.set(e.getKey(), e.getValue());
            }
            return b.build().validate();
        } catch (IllegalArgumentException e) {
            throw new UsageException(e.getMessage());
        }
    }

    static String fractions(double[] v) {
        StringBuilder b = new StringBuilder("[");
        for (int i = 0; i < v.length; i++) {
            b.append(i == 0 ? "" : ", ").append(String.format(Locale.ROOT, "%.3f", v[i]));
        }
        return b.append(']').toString();
    }
}
