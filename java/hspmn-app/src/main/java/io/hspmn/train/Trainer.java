package io.hspmn.train;

import io.hspmn.AdamwOptions;
import io.hspmn.AdamwResult;
import io.hspmn.Backend;
import io.hspmn.Context;
import io.hspmn.ContextOptions;
import io.hspmn.DType;
import io.hspmn.Hspmn;
import io.hspmn.LanguageModel;
import io.hspmn.LossResult;
import io.hspmn.MemoryKind;
import io.hspmn.ModelConfig;
import io.hspmn.ModelForwardOptions;
import io.hspmn.Routing;
import io.hspmn.Tensor;
import io.hspmn.checkpoint.Checkpoint;
import io.hspmn.checkpoint.ModelCheckpoint;
import io.hspmn.data.BatchSampler;
import io.hspmn.data.ByteCorpus;
import io.hspmn.data.CorpusSplit;
import io.hspmn.io.SafeTensorsWriter;
import io.hspmn.metrics.HtmlReport;
import io.hspmn.metrics.MetricsWriter;
import io.hspmn.metrics.ProgressBar;
import io.hspmn.metrics.StepMetrics;

import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;

/**
 * Trains a byte-level HSPMN language model, as native/reference/hspmn_lm.py's {@code train_step} does:
 * per optimizer step {@code s} (0-based), {@code A = grad-accum} micro-batches of {@code B} windows of
 * {@code S + 1} bytes (tokens: the first S, targets: the next S), each a training forward at noise step
 * {@code s * A + a} with the aux target of {@link Schedules#auxTarget} and a backward of
 * {@code loss / A} (accumulating after the first), then AdamW with step {@code s + 1} and the learning
 * rate of {@link Schedules#lr}, then (threshold routing, {@code --router-bias-rate} > 0, the update
 * applied) {@link LanguageModel#routerBiasStep} toward the step's aux target. A step whose gradient norm is not finite changes nothing and is counted
 * as skipped. While skipped steps follow one another, due checkpoints wait (they are written once a step
 * applies again, or at the end of the run); {@code --max-skipped} of them in a row end the run with a
 * {@link TrainingDivergedException}, so the checkpoint in {@code --out} stays the last one written before
 * the divergence.
 *
 * <p>Writes into {@code --out}: {@value #METRICS} (one JSON line per step), {@value #CHECKPOINT} (every
 * {@code save-every} steps and at the end, atomically) and {@value #REPORT} (after every validation and at the end). Validation runs every
 * {@code eval-every} steps and at the last step, in evaluation mode (no noise): bits per byte and the
 * routed fraction per layer. {@code --resume} continues bit for bit: the same batches (the sampler's
 * position is in the checkpoint), the same noise (keyed by the step) and the same schedule.
 */
public final class Trainer implements AutoCloseable {
    public static final String CHECKPOINT = "checkpoint.safetensors";
    /** With --keep-best: the checkpoint of the best validation bits/byte so far. */
    public static final String BEST = "best.safetensors";
    public static final String METRICS = "metrics.jsonl";
    public static final String REPORT = "report.html";

    private static final double LN2 = Math.log(2);

    /** A validation pass: mean cross-entropy (nats), bits per byte, evaluation-mode routed fraction per layer. */
    public record EvalResult(double loss, double bitsPerByte, double[] routedFraction) {
        public EvalResult {
            routedFraction = routedFraction.clone();
        }

        @Override
        public double[] routedFraction() {
            return routedFraction.clone();
        }
    }

    /**
     * What a {@link #run()} ended with.
     *
     * @param step                optimizer steps taken in all (this invocation and any before it)
     * @param skippedSteps        steps of this invocation whose update was skipped (non-finite gradient norm)
     * @param lastEval            the last validation of this invocation, or null if none ran
     * @param lastEvalStep        the step lastEval was measured at (0 when none ran); before {@code step}
     *                            when --stop-after ends the invocation between validations
     * @param validationEntropy   unigram entropy of the validation split, bits per byte (the bar to clear)
     */
    /**
     * @param stoppedEarlyBest with --early-stop, the step of the best validation when the run stopped for it; -1
     *                         when it did not stop early
     * @param bestValidation   the lowest validation bits/byte of the run so far (infinite without one)
     */
    public record Result(long step, long skippedSteps, EvalResult lastEval, long lastEvalStep, double validationEntropy, Path checkpoint,
                         Path metrics, Path report, long stoppedEarlyBest, double bestValidation) {
        public boolean stoppedEarly() {
            return stoppedEarlyBest >= 0;
        }
    }

    private final TrainOptions options;
    private final PrintStream log;
    private final ByteCorpus corpus;
    private final CorpusSplit trainSplit;
    private final CorpusSplit validationSplit;
    private final BatchSampler sampler;
    private final BatchSampler validationSampler;
    private final Context ctx;
    private final LanguageModel model;
    private final Tensor tokensStage;  // [B, S] i32, HOST (CPU) or PINNED (CUDA): the sampler writes here
    private final Tensor targetsStage;
    private final Tensor tokens;       // what the model reads: the stage itself on the CPU, DEVICE copies on CUDA
    private final Tensor targets;
    private final MemorySegment tokensView;
    private final MemorySegment targetsView;
    private final MetricsWriter metrics;
    private final Path checkpointPath;
    private long step;
    private long skipped;
    private long streak;            // consecutive skipped steps up to now
    private long lastSaved = -1;    // the step of the last checkpoint this invocation wrote
    private boolean lastStepSkipped;
    private final boolean biasControl;  // router bias control: threshold routing and a rate > 0
    // The run's best validation (bits/byte) and its step: best.safetensors holds it (--keep-best), and
    // --early-stop counts validations from it.
    private double bestValidation = Double.POSITIVE_INFINITY;
    private long bestStep;

    private Trainer(TrainOptions options, PrintStream log, ByteCorpus corpus, Context ctx, LanguageModel model,
                    TrainCheckpoint.State resumed) throws IOException {
        this.options = options;
        this.log = log;
        this.corpus = corpus;
        ByteCorpus.Splits splits = corpus.split(options.valFraction());
        this.trainSplit = splits.train();
        this.validationSplit = splits.validation();
        this.sampler = BatchSampler.shuffled(trainSplit, options.batch(), options.seqLen(), options.seed());
        this.validationSampler = BatchSampler.sequential(validationSplit, options.batch(), options.seqLen());
        this.ctx = ctx;
        this.model = model;
        boolean cuda = ctx.backend() == Backend.CUDA;
        MemoryKind stage = cuda ? MemoryKind.PINNED : MemoryKind.HOST;
        this.tokensStage = Tensor.create(ctx, DType.I32, stage, options.batch(), options.seqLen());
        this.targetsStage = Tensor.create(ctx, DType.I32, stage, options.batch(), options.seqLen());
        this.tokens = cuda ? Tensor.create(ctx, DType.I32, MemoryKind.DEVICE, options.batch(), options.seqLen()) : tokensStage;
        this.targets = cuda ? Tensor.create(ctx, DType.I32, MemoryKind.DEVICE, options.batch(), options.seqLen()) : targetsStage;
        this.tokensView = tokensStage.segment();
        this.targetsView = targetsStage.segment();
        this.checkpointPath = options.out().resolve(CHECKPOINT);
        this.biasControl = options.routerBiasRate() > 0 && model.config().block().routing() == Routing.THRESHOLD;
        Path metricsPath = options.out().resolve(METRICS);
        if (resumed != null) {
            ModelCheckpoint.restore(resumed.checkpoint(), model, true);
            try {
                sampler.restore(resumed.sampler(options.batch(), options.seqLen()));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("--data " + options.data() + " is not the corpus the run was trained on: "
                        + "its training split has " + trainSplit.size() + " bytes, the checkpoint's had "
                        + resumed.rngState()[TrainCheckpoint.RNG_SPLIT_BYTES] + " (" + e.getMessage() + ")");
            }
            this.step = resumed.step();
            // before the metrics are cut back to the checkpoint's step: best.safetensors may be newer than it
            if (Files.isRegularFile(metricsPath)) {
                double[] best = bestValidationLogged(metricsPath);
                bestStep = (long) best[1];
                // without its best.safetensors a --keep-best run writes one at the next validation
                bestValidation = options.keepBest() && !Files.isRegularFile(options.out().resolve(BEST))
                        ? Double.POSITIVE_INFINITY : best[0];
            }
            this.metrics = MetricsWriter.resume(metricsPath, step);
        } else {
            this.metrics = MetricsWriter.create(metricsPath);
        }
    }

    /**
     * Opens the corpus, makes the context and the model (fresh from the seed, or the checkpoint in
     * {@code --out} when resuming) and the metrics file.
     *
     * @param log progress and evaluation lines; null for none
     * @throws IllegalArgumentException bad options, an --out that already holds a run (without --resume) or
     *                                  none (with it), a corpus too small for one window, a resume whose
     *                                  options or data differ from the checkpoint's
     * @throws IOException              unreadable or invalid corpus (a {@link io.hspmn.data.CorpusException}),
     *                                  unreadable checkpoint
     */
    public static Trainer open(TrainOptions options, PrintStream log) throws IOException {
        Objects.requireNonNull(options, "options");
        PrintStream out = log != null ? log : new PrintStream(OutputStream.nullOutputStream());
        options.validate();
        Path ckpt = options.out().resolve(CHECKPOINT);
        TrainCheckpoint.State resumed = null;
        ModelConfig modelConfig = options.modelConfig();
        if (options.resume()) {
            if (!Files.isRegularFile(ckpt)) {
                throw new IllegalArgumentException("--resume: there is no checkpoint to resume in " + options.out()
                        + " (looked for " + ckpt + ")");
            }
            resumed = TrainCheckpoint.load(ckpt, w -> out.println("warning: " + w));
            if (!TrainCheckpoint.hasTrainingOptions(resumed)) {
                throw new IllegalArgumentException("--resume: " + ckpt + " holds weights but no training options, so it"
                        + " cannot be continued exactly");
            }
            TrainOptions.forResume(resumed.options(), fixedOptions(options)); // refuses changed MODEL/RUN options
            modelConfig = resumed.model();
            if (resumed.step() >= options.endStep()) {
                throw new IllegalArgumentException("--resume: the checkpoint is at step " + resumed.step()
                        + ", already at --steps " + options.steps()
                        + (options.stopAfter() > 0 ? " / --stop-after " + options.stopAfter() : "")
                        + "; raise --steps to train further");
            }
        } else if (Files.exists(ckpt)) {
            throw new IllegalArgumentException("--out " + options.out() + " already holds a run (" + CHECKPOINT
                    + "); pass --resume to continue it, or choose another --out");
        }
        if (Files.exists(options.out()) && !Files.isDirectory(options.out())) {
            throw new IllegalArgumentException("--out " + options.out() + " is a file, not a folder: --out names the folder"
                    + " that receives the checkpoint, metrics and report (it is made if missing)");
        }
        Files.createDirectories(options.out());
        int orphans = SafeTensorsWriter.removeOrphans(ckpt);
        if (orphans > 0) {
            out.printf(Locale.ROOT, "removed %d temporary file%s left by an interrupted checkpoint save in %s%n", orphans,
                    orphans == 1 ? "" : "s", options.out());
        }
        ByteCorpus corpus = ByteCorpus.open(options.data());
        Context ctx = null;
        try {
            ctx = Context.create(ContextOptions.defaults().withBackend(options.backend()).withNumThreads(options.threads()));
            LanguageModel model = LanguageModel.create(ctx, modelConfig, options.seed());
            requireCheckpointHeap(modelConfig);
            Trainer t = new Trainer(options, out, corpus, ctx, model, resumed);
            t.describe(resumed);
            return t;
        } catch (IOException | RuntimeException e) {
            if (ctx != null) {
                ctx.close();
            }
            corpus.close();
            throw e;
        }
    }

    /** Java heap a checkpoint save takes per parameter: weight, m and v as f32 bytes, and one float[] copy in flight. */
    static final long CHECKPOINT_HEAP_BYTES_PER_PARAMETER = 16;

    /**
     * A checkpoint is captured on the Java heap (TrainCheckpoint.capture); a model whose copy does not fit
     * under -Xmx would fail at its first save, possibly hours in. The native side has refused what does not
     * fit in memory already (hspmn_model_create); this is the heap's share, refused before the first step.
     */
    private static void requireCheckpointHeap(ModelConfig c) {
        long need = Math.multiplyExact(c.parameterCount(), CHECKPOINT_HEAP_BYTES_PER_PARAMETER);
        Runtime rt = Runtime.getRuntime();
        long free = rt.maxMemory() - (rt.totalMemory() - rt.freeMemory());
        if (need > free) {
            throw new IllegalArgumentException(String.format(Locale.ROOT, "saving a checkpoint of this model (%,d "
                    + "parameters) needs about %,d bytes of Java heap, but %,d are free under -Xmx (%,d): run java "
                    + "with a larger -Xmx, or train a smaller model", c.parameterCount(), need, free, rt.maxMemory()));
        }
    }

    /** The MODEL and RUN options of {@code o}, as {@link TrainOptions#forResume} compares them. */
    private static Map<String, String> fixedOptions(TrainOptions o) {
        Map<String, String> m = new LinkedHashMap<>();
        for (TrainOptions.Option opt : TrainOptions.OPTIONS) {
            if (opt.scope() == TrainOptions.Scope.MODEL || opt.scope() == TrainOptions.Scope.RUN) {
                m.put(opt.name(), opt.get().apply(o));
            }
        }
        return m;
    }

    private void describe(TrainCheckpoint.State resumed) {
        ModelConfig c = model.config();
        log.printf(Locale.ROOT, "%s on %s: %d layers, dim %d, %d/%d heads, %s routing (rho %.2f), %,d parameters%n",
                resumed != null ? "resuming at step " + resumed.step() : "training", ctx.backend(), c.numLayers(),
                c.block().dim(), c.block().numHeads(), c.block().numKvHeads(), c.block().routing().jsonName(),
                c.block().sparsityK(), c.parameterCount());
        log.printf(Locale.ROOT, "data %s: %,d training bytes, %,d validation bytes (unigram entropy %.3f bits/byte)%n",
                options.data(), trainSplit.size(), validationSplit.size(), validationSplit.unigramEntropyBits());
        log.printf(Locale.ROOT, "%d steps of %d x %d x %d bytes, lr %.3g (warm-up %d, cosine to x%.2f), out %s%n",
                options.steps(), options.gradAccum(), options.batch(), options.seqLen(), options.lr(), options.warmup(),
                options.minLrRatio(), options.out());
    }

    public LanguageModel model() {
        return model;
    }

    public TrainOptions options() {
        return options;
    }

    /** Optimizer steps taken. */
    public long step() {
        return step;
    }

    public CorpusSplit trainSplit() {
        return trainSplit;
    }

    public CorpusSplit validationSplit() {
        return validationSplit;
    }

    /** Trains from the current step to --stop-after (or --steps); see the class comment. */
    public Result run() throws IOException {
        long end = options.endStep();
        ProgressBar bar = new ProgressBar(options.steps(), log, log == System.out && ProgressBar.isTerminal(), 10,
                System::nanoTime);
        EvalResult lastEval = null;
        long lastEvalStep = 0;
        long skippedBefore = skipped;
        boolean savePending = false;
        boolean stoppedEarly = false;
        while (step < end) {
            StepMetrics m = trainStep();
            streak = lastStepSkipped ? streak + 1 : 0;
            if (evalDue()) {
                lastEval = evaluate();
                lastEvalStep = step;
                m = m.withValidation(lastEval.loss(), lastEval.bitsPerByte(), lastEval.routedFraction());
                if (lastEval.bitsPerByte() < bestValidation) {
                    bestValidation = lastEval.bitsPerByte();
                    bestStep = step;
                    if (options.keepBest()) {
                        capture().save(options.out().resolve(BEST));
                    }
                } else if (options.earlyStop() > 0 && step - bestStep >= options.earlyStop() * options.evalEvery()) {
                    stoppedEarly = true;
                    end = step;  // the checkpoint below is written at this step
                }
            }
            metrics.write(m);
            if (m.hasValidation()) {
                writeReport();  // kept current, so a run stopped from outside still has its charts
            }
            bar.update(step, m.loss(), m.bitsPerByte(), m.tokS());
            if (m.hasValidation()) {
                bar.finish();
                log.printf(Locale.ROOT, "step %d: validation %.4f bits/byte, routed fraction (no noise) %s%n", step,
                        lastEval.bitsPerByte(), format(lastEval.routedFraction()));
            }
            if (options.maxSkipped() > 0 && streak >= options.maxSkipped()) {
                bar.finish();
                metrics.sync();
                writeReport();
                throw diverged();
            }
            savePending |= saveDue(end);
            // A checkpoint waits while skipped steps pile up: the state that makes them may be diverging.
            if (savePending && (streak == 0 || step == end)) {
                save();
                savePending = false;
            }
        }
        bar.finish();
        Path report = writeReport();
        return new Result(step, skipped - skippedBefore, lastEval, lastEvalStep, validationSplit.unigramEntropyBits(), checkpointPath,
                metrics.path(), report, stoppedEarly ? bestStep : -1, bestValidation);
    }

    private Path writeReport() throws IOException {
        Path report = options.out().resolve(REPORT);
        HtmlReport.write(metrics.path(), report, new HtmlReport.Options("HSPMN training: " + options.data().getFileName(),
                validationSplit.unigramEntropyBits(), (double) model.config().block().sparsityK()));
        return report;
    }

    private TrainingDivergedException diverged() {
        String kept = lastSaved >= 0 ? "the checkpoint in " + options.out() + " is the last written before them (step "
                + lastSaved + ")"
                : Files.isRegularFile(checkpointPath) ? "the checkpoint in " + options.out() + " was left as it was"
                : "no checkpoint was written";
        return new TrainingDivergedException(String.format(Locale.ROOT, "training diverged: steps %d to %d all had a "
                        + "non-finite gradient norm and were skipped (--max-skipped %d); stopped at step %d, %s. Lower --lr "
                        + "(%.3g) or --warmup's ramp, or keep --clip on", step - streak + 1, step, options.maxSkipped(), step,
                kept, options.lr()), step, streak);
    }

    private boolean evalDue() {
        return step == options.steps() || (options.evalEvery() > 0 && step % options.evalEvery() == 0);
    }

    private boolean saveDue(long end) {
        return step == end || (options.saveEvery() > 0 && step % options.saveEvery() == 0);
    }

    /** One optimizer step; returns its metrics (without validation). */
    StepMetrics trainStep() {
        long s = step;
        int a = options.gradAccum();
        float lr = (float) Schedules.lr(s, options.warmup(), options.steps(), options.lr(), options.minLrRatio());
        float auxTarget = Schedules.auxTarget(s, options.auxWarmup(), model.config().block().sparsityK());
        long t0 = System.nanoTime();
        double loss = 0;
        double ce = 0;
        double aux = 0;
        double[] routed = new double[model.config().numLayers()];
        for (int micro = 0; micro < a; micro++) {
            sampler.next(tokensView, targetsView);
            upload();
            LossResult r = model.forward(tokens, targets, ModelForwardOptions.training(options.seed(), s * a + micro, auxTarget,
                    options.dropout()));
            model.backward(1f / a, micro > 0);
            loss += (double) r.loss() / a;
            ce += (double) r.crossEntropy() / a;
            float[] layerAux = r.aux();
            float[] layerRouted = r.routedFraction();
            for (int i = 0; i < routed.length; i++) {
                aux += (double) layerAux[i] / a;
                routed[i] += (double) layerRouted[i] / a;
            }
        }
        AdamwResult u = model.adamwStep(new AdamwOptions(s + 1, lr, AdamwOptions.BETA1, options.beta2(),
                AdamwOptions.EPS, options.weightDecay(), options.clip()));
        if (u.applied() && biasControl) {
            model.routerBiasStep(auxTarget, options.routerBiasRate());
        }
        step = s + 1;
        lastStepSkipped = !u.applied();
        if (!u.applied()) {
            skipped++;
            log.printf(Locale.ROOT, "step %d: gradient norm %s is not finite; the update was skipped%n", step, u.gradNorm());
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        double tokS = (double) a * options.batch() * options.seqLen() / seconds;
        return new StepMetrics(step, loss, aux, ce / LN2, routed, lr, u.gradNorm(), tokS, Hspmn.allocStats().peakBytes(),
                null, null);
    }

    private void upload() {
        if (tokens != tokensStage) {
            tokens.copyFrom(tokensStage);
            targets.copyFrom(targetsStage);
        }
    }

    /**
     * One validation pass over the first {@code eval-batches} batches of the validation split (the same
     * ones every time), in evaluation mode: no noise, nothing kept for backward.
     */
    public EvalResult evaluate() {
        validationSampler.reset();
        int n = options.evalBatches();
        double ce = 0;
        double[] routed = new double[model.config().numLayers()];
        for (int k = 0; k < n; k++) {
            validationSampler.next(tokensView, targetsView);
            upload();
            LossResult r = model.forward(tokens, targets, ModelForwardOptions.evaluation());
            ce += (double) r.crossEntropy() / n;
            float[] lr = r.routedFraction();
            for (int i = 0; i < routed.length; i++) {
                routed[i] += (double) lr[i] / n;
            }
        }
        return new EvalResult(ce, ce / LN2, routed);
    }

    /** Writes the checkpoint (atomically) and forces the metrics to disk. */
    public Path save() throws IOException {
        capture().save(checkpointPath);
        metrics.sync();
        lastSaved = step;
        return checkpointPath;
    }

    /**
     * The lowest val_bpb in the metrics a resumed run keeps and its step, {bits/byte, step} (its
     * best.safetensors was written at that validation), so a resumed --keep-best run replaces it only with
     * a better one and --early-stop counts on from it.
     */
    private static double[] bestValidationLogged(Path metricsPath) throws IOException {
        double[] best = {Double.POSITIVE_INFINITY, 0};
        for (String line : Files.readAllLines(metricsPath)) {
            try {
                StepMetrics m = StepMetrics.fromJson(line);
                Double v = m.valBpb();
                if (v != null && v < best[0]) {
                    best[0] = v;
                    best[1] = m.step();
                }
            } catch (IllegalArgumentException torn) {
                // the last line of a killed run may be cut short; MetricsWriter.resume drops it too
            }
        }
        return best;
    }

    /** The run's state now: weights, moments, options, step and sampler position (what --resume reads). */
    private Checkpoint capture() {
        return TrainCheckpoint.capture(model, storedOptions(), step, sampler.state());
    }

    /** What the checkpoint records: the data path made absolute, so a resume from another folder finds it. */
    private TrainOptions storedOptions() {
        return options.toBuilder().data(options.data().toAbsolutePath().normalize()).build();
    }

    private static String format(double[] v) {
        List<String> s = new ArrayList<>();
        for (double x : v) {
            s.add(String.format(Locale.ROOT, "%.3f", x));
        }
        return s.toString();
    }

    /** Closes the metrics file, the model, the context and the corpus. */
    @Override
    public void close() throws IOException {
        try {
            metrics.close();
        } finally {
            try {
                ctx.close();
            } finally {
                corpus.close();
            }
        }
    }

    @Override
    public String toString() {
        return "Trainer[step " + step + "/" + options.steps() + ", " + model + ", " + options.out() + "]";
    }
}
