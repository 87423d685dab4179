package io.hspmn.train;

import io.hspmn.AdamwOptions;
import io.hspmn.AdamwResult;
import io.hspmn.Backend;
import io.hspmn.Communicator;
import io.hspmn.Context;
import io.hspmn.ContextOptions;
import io.hspmn.DataParallelStats;
import io.hspmn.Hspmn;
import io.hspmn.HspmnException;
import io.hspmn.LanguageModel;
import io.hspmn.LossResult;
import io.hspmn.ModelConfig;
import io.hspmn.ModelForwardOptions;
import io.hspmn.Routing;
import io.hspmn.checkpoint.Checkpoint;
import io.hspmn.checkpoint.ModelCheckpoint;
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
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicInteger;

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
 *
 * <p>Data parallel ({@code --gpus N}, {@code --nodes M}; README "Training on several GPUs"): each rank of
 * this process runs the loop above on a thread of its own with its own context and model, on its rows
 * {@code [r * B, (r + 1) * B)} of each global batch of {@code N * M * B} windows (the sampler draws the
 * global batch, so the windows are exactly those of one rank with batch {@code N * M * B}); the model's
 * communicator averages the gradients and keeps the weights the same on every rank, and the logged
 * numbers are averaged over the ranks. Global rank 0 alone writes {@code --out}; a checkpoint holds the
 * full state (a sharded optimizer's moments gathered) and resumes on any number of ranks. A rank that
 * fails aborts the communicator, so every rank stops with a {@link RankFailedException} naming it.
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

    /** Called by every rank after each of its steps (tests make a rank fail through it). */
    @FunctionalInterface
    interface StepHook {
        void after(int rank, long step) throws Exception;
    }

    /** One rank's share of a collective piece of work ({@link #onEveryRank}). */
    @FunctionalInterface
    private interface RankTask<T> {
        T run(Rank r) throws Exception;
    }

    private final TrainOptions options;
    private final PrintStream log;
    private final ByteCorpus corpus;
    private final CorpusSplit trainSplit;
    private final CorpusSplit validationSplit;
    private final Rank[] ranks;          // this process's ranks, by local index
    private final MetricsWriter metrics; // global rank 0 only (null elsewhere)
    private final Path checkpointPath;
    private final boolean biasControl;   // router bias control: threshold routing and a rate > 0
    private final boolean sharded;       // ZeRO-1: reading a moment is collective
    private volatile StepHook hook = (rank, step) -> { };

    private Trainer(TrainOptions options, PrintStream log, ByteCorpus corpus, CorpusSplit trainSplit,
                    CorpusSplit validationSplit, Rank[] ranks, TrainCheckpoint.State resumed) throws IOException {
        this.options = options;
        this.log = log;
        this.corpus = corpus;
        this.trainSplit = trainSplit;
        this.validationSplit = validationSplit;
        this.ranks = ranks;
        this.checkpointPath = options.out().resolve(CHECKPOINT);
        this.biasControl = options.routerBiasRate() > 0 && ranks[0].model.config().block().routing() == Routing.THRESHOLD;
        this.sharded = options.parallel().shardOptimizer() && ranks[0].comm != null;
        Path metricsPath = options.out().resolve(METRICS);
        Rank lead = ranks[0];
        if (lead.global != 0) {
            this.metrics = null;
        } else if (resumed != null) {
            // before the metrics are cut back to the checkpoint's step: best.safetensors may be newer than it
            if (Files.isRegularFile(metricsPath)) {
                double[] best = bestValidationLogged(metricsPath);
                lead.bestStep = (long) best[1];
                // without its best.safetensors a --keep-best run writes one at the next validation
                lead.bestValidation = options.keepBest() && !Files.isRegularFile(options.out().resolve(BEST))
                        ? Double.POSITIVE_INFINITY : best[0];
            }
            this.metrics = MetricsWriter.resume(metricsPath, resumed.step());
        } else {
            this.metrics = MetricsWriter.create(metricsPath);
        }
    }

    /**
     * Opens the corpus, makes each rank's context and model (fresh from the seed, or the checkpoint in
     * {@code --out} when resuming), joins the ranks' communicators and opens the metrics file.
     *
     * @param log progress and evaluation lines; null for none
     * @throws IllegalArgumentException bad options, an --out that already holds a run (without --resume) or
     *                                  none (with it), a corpus too small for one window, a resume whose
     *                                  options or data differ from the checkpoint's, more --gpus than
     *                                  devices, a communicator that cannot serve the run
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
        List<Context> contexts = new ArrayList<>();
        try {
            ByteCorpus.Splits splits = corpus.split(options.valFraction());
            ParallelOptions par = options.parallel();
            Rank[] ranks = new Rank[par.gpus()];
            for (int i = 0; i < ranks.length; i++) {
                Context ctx = rankContext(options, i, i == 0 ? options.backend() : contexts.getFirst().backend());
                contexts.add(ctx);
                LanguageModel model = LanguageModel.create(ctx, modelConfig, options.seed());
                ranks[i] = new Rank(i, par.globalRank(i), ctx, model, options, splits.train(), splits.validation());
            }
            requireCheckpointHeap(modelConfig);
            connect(ranks, options);
            if (resumed != null) {
                restore(ranks, resumed, options, splits.train());
            }
            Trainer t = new Trainer(options, out, corpus, splits.train(), splits.validation(), ranks, resumed);
            if (resumed != null && options.keepBest()) {
                onEveryRank(ranks, par.world(), t::shareBest);
            }
            t.describe(resumed);
            return t;
        } catch (IOException | RuntimeException e) {
            for (Context c : contexts.reversed()) {
                c.close();
            }
            corpus.close();
            throw e;
        }
    }

    /**
     * Local rank {@code i}'s context: device i; rank 0 resolves --backend, the others take what it
     * resolved. CPU ranks share the cores: --threads 0 gives each its share.
     */
    private static Context rankContext(TrainOptions o, int i, Backend backend) {
        int gpus = o.parallel().gpus();
        int threads = o.threads() > 0 || gpus == 1 ? o.threads()
                : Math.max(1, Runtime.getRuntime().availableProcessors() / gpus);
        ContextOptions co = ContextOptions.defaults().withBackend(backend).withDevice(i).withNumThreads(threads);
        if (i == 0) {
            return Context.create(co);
        }
        try {
            return Context.create(co);
        } catch (HspmnException e) {
            throw new IllegalArgumentException("--gpus " + gpus + ": rank " + i + " cannot open " + backend + " device " + i
                    + " (" + e.getMessage() + "); --gpus is at most the number of devices of this host", e);
        }
    }

    /**
     * Joins the ranks into one communicator (none for one rank under --comm auto) and attaches it to
     * their models: collective, so one thread per local rank; then node 0 retires the rendezvous file.
     */
    private static void connect(Rank[] ranks, TrainOptions o) throws IOException {
        ParallelOptions par = o.parallel();
        Communicator.Kind kind = par.commKind(ranks[0].ctx.backend());
        if (kind == null) {
            return;
        }
        byte[] id;
        try {
            id = Rendezvous.id(par, kind, System.getenv(), System::currentTimeMillis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new java.io.InterruptedIOException("interrupted while waiting for --comm-id-file");
        }
        int timeoutMs = Math.toIntExact(par.commTimeoutS() * 1000L);
        long bucketBytes = (long) par.bucketMib() << 20;
        onEveryRank(ranks, par.world(), r -> {
            r.comm = Communicator.create(r.ctx, new Communicator.Params(kind, r.global, par.world(), timeoutMs, id));
            r.model.setCommunicator(r.comm, bucketBytes, par.shardOptimizer());
            return null;
        });
        Rendezvous.spent(par);
    }

    /** Every rank takes the checkpoint's weights, moments (a sharded rank keeps its share) and sampler position. */
    private static void restore(Rank[] ranks, TrainCheckpoint.State resumed, TrainOptions o, CorpusSplit train)
            throws IOException {
        for (Rank r : ranks) {
            ModelCheckpoint.restore(resumed.checkpoint(), r.model, true);
            try {
                r.sampler.restore(resumed.sampler(Math.toIntExact(o.globalBatch()), o.seqLen()));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("--data " + o.data() + " is not the corpus the run was trained on: "
                        + "its training split has " + train.size() + " bytes, the checkpoint's had "
                        + resumed.rngState()[TrainCheckpoint.RNG_SPLIT_BYTES] + " (" + e.getMessage() + ")");
            }
            r.step = resumed.step();
            r.windows = resumed.checkpoint().dataPosition();
        }
    }

    /**
     * Global rank 0's best validation so far (read from its metrics) to every rank: --keep-best's
     * decision to capture must be the same on all, as the capture of sharded moments is collective.
     */
    private Void shareBest(Rank r) {
        if (r.comm != null && r.comm.world() > 1) {
            // a sum of one value and zeros: rank 0's, rounded to float on every rank (steps are exact in a float)
            float[] best = {r.global == 0 ? (float) r.bestValidation : 0f, r.global == 0 ? r.bestStep : 0f};
            r.comm.allReduce(best, false);
            r.bestValidation = best[0];
            r.bestStep = (long) best[1];
        }
        return null;
    }

    /**
     * Runs {@code task} on every rank of this process, one thread each (on the caller's thread for a
     * single rank), and returns local rank 0's result. The first rank to fail aborts every communicator,
     * so the others, waiting in a collective or reaching the next, fail at once instead of hanging; that
     * failure comes back as a {@link RankFailedException} naming the rank, the others' errors suppressed
     * in it. A {@link TrainingDivergedException} is no failure: every rank reaches the same one.
     */
    private static <T> T onEveryRank(Rank[] ranks, int world, RankTask<T> task) throws IOException {
        if (ranks.length == 1) {
            return runSingle(ranks[0], world, task);
        }
        Object[] results = new Object[ranks.length];
        Throwable[] errors = new Throwable[ranks.length];
        AtomicInteger firstFailed = new AtomicInteger(-1);
        Thread[] threads = new Thread[ranks.length];
        for (int i = 0; i < ranks.length; i++) {
            int k = i;
            threads[i] = Thread.ofPlatform().name("hspmn-rank-" + ranks[i].global).start(() -> {
                try {
                    results[k] = task.run(ranks[k]);
                } catch (Throwable e) {
                    errors[k] = e;
                    if (!(e instanceof TrainingDivergedException) && firstFailed.compareAndSet(-1, k)) {
                        abortAll(ranks);
                    }
                }
            });
        }
        boolean interrupted = false;
        for (Thread t : threads) {
            while (true) {
                try {
                    t.join();
                    break;
                } catch (InterruptedException e) {
                    interrupted = true;
                    if (firstFailed.compareAndSet(-1, -2)) {
                        abortAll(ranks);  // the ranks stop at their next collective, then we return
                    }
                }
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
        int f = firstFailed.get();
        if (f == -2) {
            throw new java.io.InterruptedIOException("interrupted: every rank was stopped");
        }
        if (f >= 0) {
            RankFailedException e = new RankFailedException(ranks[f].global, world, errors[f]);
            for (int i = 0; i < errors.length; i++) {
                if (i != f && errors[i] != null) {
                    e.addSuppressed(errors[i]);
                }
            }
            throw e;
        }
        if (errors[0] != null) {
            throw (TrainingDivergedException) errors[0];
        }
        for (Throwable e : errors) {
            if (e != null) {
                throw (TrainingDivergedException) e;
            }
        }
        @SuppressWarnings("unchecked")
        T r = (T) results[0];
        return r;
    }

    /**
     * The task on the caller's thread. A rank of several processes (--nodes) still aborts its
     * communicator when it fails, so the other nodes fail fast rather than wait out the timeout.
     */
    private static <T> T runSingle(Rank r, int world, RankTask<T> task) throws IOException {
        try {
            return task.run(r);
        } catch (IOException | RuntimeException e) {
            if (world > 1 && !(e instanceof TrainingDivergedException)) {
                abortAll(new Rank[] {r});
                throw new RankFailedException(r.global, world, e);
            }
            throw e;
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    private static void abortAll(Rank[] ranks) {
        for (Rank r : ranks) {
            Communicator c = r.comm;
            if (c != null) {
                try {
                    c.abort();
                } catch (RuntimeException ignored) {
                    // a communicator that cannot abort is already dead: its collectives fail anyway
                }
            }
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
        Rank lead = ranks[0];
        ModelConfig c = lead.model.config();
        ParallelOptions par = options.parallel();
        if (lead.global != 0) {
            log.printf(Locale.ROOT, "node %d of %d: ranks %d to %d of %d joined; node 0 writes %s%n", par.nodeRank(),
                    par.nodes(), lead.global, lead.global + ranks.length - 1, par.world(), options.out());
            return;
        }
        log.printf(Locale.ROOT, "%s on %s: %d layers, dim %d, %d/%d heads, %s routing (rho %.2f), %,d parameters%n",
                resumed != null ? "resuming at step " + resumed.step() : "training", lead.ctx.backend(), c.numLayers(),
                c.block().dim(), c.block().numHeads(), c.block().numKvHeads(), c.block().routing().jsonName(),
                c.block().sparsityK(), c.parameterCount());
        log.printf(Locale.ROOT, "data %s: %,d training bytes, %,d validation bytes (unigram entropy %.3f bits/byte)%n",
                options.data(), trainSplit.size(), validationSplit.size(), validationSplit.unigramEntropyBits());
        if (lead.comm != null) {
            log.printf(Locale.ROOT, "data parallel: %d rank%s (%d node%s x %d), %s communicator%s; global batch %d x %d "
                            + "sequences%n", par.world(), par.world() == 1 ? "" : "s", par.nodes(), par.nodes() == 1 ? "" : "s",
                    par.gpus(), lead.comm.kind().name().toLowerCase(Locale.ROOT), sharded ? ", optimizer sharded (ZeRO-1)" : "",
                    par.world(), options.batch());
        }
        if (resumed != null && resumed.options().globalBatch() != options.globalBatch()) {
            log.printf(Locale.ROOT, "note: the global batch changes from %d to %d sequences: the sampler goes on from the "
                            + "window where the checkpoint stopped (no window is skipped or seen twice, they are only grouped "
                            + "%d to a batch now), and the schedule still counts optimizer steps%n",
                    resumed.options().globalBatch(), options.globalBatch(), options.globalBatch());
        }
        log.printf(Locale.ROOT, "%d steps of %d x %d x %d bytes, lr %.3g (warm-up %d, cosine to x%.2f), out %s%n",
                options.steps(), options.gradAccum(), options.globalBatch(), options.seqLen(), options.lr(), options.warmup(),
                options.minLrRatio(), options.out());
    }

    /** Local rank 0's model (every rank's holds the same weights). */
    public LanguageModel model() {
        return ranks[0].model;
    }

    public TrainOptions options() {
        return options;
    }

    /** Optimizer steps taken. */
    public long step() {
        return ranks[0].step;
    }

    public CorpusSplit trainSplit() {
        return trainSplit;
    }

    public CorpusSplit validationSplit() {
        return validationSplit;
    }

    /** Whether this process writes --out (it holds global rank 0). */
    public boolean writesOutput() {
        return metrics != null;
    }

    /** Test hook: runs on every rank after each step. */
    void onStep(StepHook h) {
        hook = Objects.requireNonNull(h);
    }

    /** Every rank's model of this process, by local rank (tests compare the replicas). */
    List<LanguageModel> replicas() {
        List<LanguageModel> l = new ArrayList<>();
        for (Rank r : ranks) {
            l.add(r.model);
        }
        return l;
    }

    /** Trains from the current step to --stop-after (or --steps) on every rank; see the class comment. */
    public Result run() throws IOException {
        return onEveryRank(ranks, options.parallel().world(), this::run);
    }

    private Result run(Rank r) throws Exception {
        boolean lead = r.global == 0;
        long end = options.endStep();
        ProgressBar bar = new ProgressBar(options.steps(), lead ? log : NO_LOG, lead && log == System.out
                && ProgressBar.isTerminal(), 10, System::nanoTime);
        EvalResult lastEval = null;
        long lastEvalStep = 0;
        long skippedBefore = r.skipped;
        boolean savePending = false;
        boolean stoppedEarly = false;
        while (r.step < end) {
            StepMetrics m = trainStep(r);
            r.streak = r.lastStepSkipped ? r.streak + 1 : 0;
            if (evalDue(r.step)) {
                lastEval = evaluate(r);  // the same on every rank (averaged), so every rank decides alike below
                lastEvalStep = r.step;
                m = m.withValidation(lastEval.loss(), lastEval.bitsPerByte(), lastEval.routedFraction());
                if (lastEval.bitsPerByte() < r.bestValidation) {
                    r.bestValidation = lastEval.bitsPerByte();
                    r.bestStep = r.step;
                    if (options.keepBest()) {
                        Checkpoint c = capture(r);
                        if (lead) {
                            c.save(options.out().resolve(BEST));
                        }
                    }
                } else if (options.earlyStop() > 0 && r.step - r.bestStep >= options.earlyStop() * options.evalEvery()) {
                    stoppedEarly = true;
                    end = r.step;  // the checkpoint below is written at this step
                }
            }
            if (lead) {
                metrics.write(m);
                if (m.hasValidation()) {
                    writeReport();  // kept current, so a run stopped from outside still has its charts
                }
                bar.update(r.step, m.loss(), m.bitsPerByte(), m.tokS());
                if (m.hasValidation()) {
                    bar.finish();
                    log.printf(Locale.ROOT, "step %d: validation %.4f bits/byte, routed fraction (no noise) %s%n", r.step,
                            lastEval.bitsPerByte(), format(lastEval.routedFraction()));
                    if (r.comm != null) {
                        DataParallelStats d = r.model.dataParallelStats();
                        log.printf(Locale.ROOT, "step %d: gradient all-reduce %d bucket%s, %.1f MiB per backward, the last "
                                        + "%.2f ms, %.0f%% of it overlapped by the backward%n", r.step, d.buckets(),
                                d.buckets() == 1 ? "" : "s", d.bytes() / 1048576.0, d.allReduceMs(), 100 * d.overlapFraction());
                    }
                }
            }
            hook.after(r.global, r.step);
            if (options.maxSkipped() > 0 && r.streak >= options.maxSkipped()) {
                if (lead) {
                    bar.finish();
                    metrics.sync();
                    writeReport();
                }
                throw diverged(r);
            }
            savePending |= saveDue(r.step, end);
            // A checkpoint waits while skipped steps pile up: the state that makes them may be diverging.
            if (savePending && (r.streak == 0 || r.step == end)) {
                save(r);
                savePending = false;
            }
        }
        Path report = null;
        if (lead) {
            bar.finish();
            report = writeReport();
        }
        return new Result(r.step, r.skipped - skippedBefore, lastEval, lastEvalStep, validationSplit.unigramEntropyBits(),
                lead ? checkpointPath : null, lead ? metrics.path() : null, report, stoppedEarly ? r.bestStep : -1,
                r.bestValidation);
    }

    private static final PrintStream NO_LOG = new PrintStream(OutputStream.nullOutputStream());

    private Path writeReport() throws IOException {
        Path report = options.out().resolve(REPORT);
        HtmlReport.write(metrics.path(), report, new HtmlReport.Options("HSPMN training: " + options.data().getFileName(),
                validationSplit.unigramEntropyBits(), (double) ranks[0].model.config().block().sparsityK()));
        return report;
    }

    private TrainingDivergedException diverged(Rank r) {
        String kept = r.lastSaved >= 0 ? "the checkpoint in " + options.out() + " is the last written before them (step "
                + r.lastSaved + ")"
                : Files.isRegularFile(checkpointPath) ? "the checkpoint in " + options.out() + " was left as it was"
                : "no checkpoint was written";
        return new TrainingDivergedException(String.format(Locale.ROOT, "training diverged: steps %d to %d all had a "
                        + "non-finite gradient norm and were skipped (--max-skipped %d); stopped at step %d, %s. Lower --lr "
                        + "(%.3g) or --warmup's ramp, or keep --clip on", r.step - r.streak + 1, r.step, options.maxSkipped(),
                r.step, kept, options.lr()), r.step, r.streak);
    }

    private boolean evalDue(long step) {
        return step == options.steps() || (options.evalEvery() > 0 && step % options.evalEvery() == 0);
    }

    private boolean saveDue(long step, long end) {
        return step == end || (options.saveEvery() > 0 && step % options.saveEvery() == 0);
    }

    /**
     * One optimizer step on rank {@code r}; returns its metrics (without validation), averaged over the
     * ranks. The model's collectives average the gradients inside backward and keep the update the same.
     */
    private StepMetrics trainStep(Rank r) {
        long s = r.step;
        int a = options.gradAccum();
        LanguageModel model = r.model;
        float lr = (float) Schedules.lr(s, options.warmup(), options.steps(), options.lr(), options.minLrRatio());
        float auxTarget = Schedules.auxTarget(s, options.auxWarmup(), model.config().block().sparsityK());
        long t0 = System.nanoTime();
        int layers = model.config().numLayers();
        double[] sums = new double[3 + layers];  // loss, ce, aux, routed fraction per layer
        for (int micro = 0; micro < a; micro++) {
            r.nextTraining();
            // Noise and dropout masks keyed by the row's index in the micro-batch's global batch, so N
            // ranks of B draw what one rank of N x B draws.
            LossResult x = model.forward(r.tokens, r.targets, ModelForwardOptions.training(options.seed(), s * a + micro,
                    auxTarget, options.dropout()).withRowOffset(r.first).withRecompute(options.recompute()));
            model.backward(1f / a, micro > 0);
            sums[0] += (double) x.loss() / a;
            sums[1] += (double) x.crossEntropy() / a;
            float[] layerAux = x.aux();
            float[] layerRouted = x.routedFraction();
            for (int i = 0; i < layers; i++) {
                sums[2] += (double) layerAux[i] / a;
                sums[3 + i] += (double) layerRouted[i] / a;
            }
        }
        r.windows += a * options.globalBatch();
        AdamwResult u = model.adamwStep(new AdamwOptions(s + 1, lr, AdamwOptions.BETA1, options.beta2(),
                AdamwOptions.EPS, options.weightDecay(), options.clip()));
        if (u.applied() && biasControl) {
            model.routerBiasStep(auxTarget, options.routerBiasRate());
        }
        r.mean(sums);
        r.step = s + 1;
        r.lastStepSkipped = !u.applied();
        if (!u.applied()) {
            r.skipped++;
            if (r.global == 0) {
                log.printf(Locale.ROOT, "step %d: gradient norm %s is not finite; the update was skipped%n", r.step,
                        u.gradNorm());
            }
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        double tokS = (double) a * options.globalBatch() * options.seqLen() / seconds;
        return new StepMetrics(r.step, sums[0], sums[2], sums[1] / LN2, Arrays.copyOfRange(sums, 3, sums.length), lr,
                u.gradNorm(), tokS, Hspmn.allocStats().peakBytes(), null, null);
    }

    /**
     * One validation pass over the first {@code eval-batches} batches of the validation split (the same
     * ones every time), in evaluation mode: no noise, nothing kept for backward. With several ranks each
     * takes its rows of every (global) batch and the results are averaged.
     */
    public EvalResult evaluate() throws IOException {
        return onEveryRank(ranks, options.parallel().world(), this::evaluate);
    }

    private EvalResult evaluate(Rank r) {
        r.validationSampler.reset();
        int n = options.evalBatches();
        int layers = r.model.config().numLayers();
        double[] sums = new double[1 + layers];  // ce, routed fraction per layer
        for (int k = 0; k < n; k++) {
            r.nextValidation();
            LossResult x = r.model.forward(r.tokens, r.targets, ModelForwardOptions.evaluation());
            sums[0] += (double) x.crossEntropy() / n;
            float[] lr = x.routedFraction();
            for (int i = 0; i < layers; i++) {
                sums[1 + i] += (double) lr[i] / n;
            }
        }
        r.mean(sums);
        return new EvalResult(sums[0], sums[0] / LN2, Arrays.copyOfRange(sums, 1, sums.length));
    }

    /** Writes the checkpoint (atomically, global rank 0 only) and forces the metrics to disk. */
    public Path save() throws IOException {
        return onEveryRank(ranks, options.parallel().world(), this::save);
    }

    private Path save(Rank r) throws IOException {
        Checkpoint c = capture(r);
        if (c != null) {
            c.save(checkpointPath);
            metrics.sync();
        }
        r.lastSaved = r.step;
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

    /**
     * The run's state now: weights, moments, options, step and sampler position (what --resume reads), on
     * global rank 0; null on the others, which only join the collective reads of a sharded optimizer's
     * moments, in the same order.
     */
    private Checkpoint capture(Rank r) {
        if (r.global == 0) {
            return TrainCheckpoint.capture(r.model, storedOptions(), r.step, r.sampler.state(), r.windows);
        }
        if (sharded) {
            TrainCheckpoint.joinCapture(r.model);
        }
        return null;
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

    /** Closes the metrics file, every rank's model, communicator and context, and the corpus. */
    @Override
    public void close() throws IOException {
        try {
            if (metrics != null) {
                metrics.close();
            }
        } finally {
            try {
                for (Rank r : ranks) {
                    r.ctx.close();
                }
            } finally {
                corpus.close();
            }
        }
    }

    @Override
    public String toString() {
        return "Trainer[step " + step() + "/" + options.steps() + ", " + ranks.length + " rank(s), " + model() + ", "
                + options.out() + "]";
    }
}
