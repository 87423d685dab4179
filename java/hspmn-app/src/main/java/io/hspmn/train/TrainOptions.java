package io.hspmn.train;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonPrimitive;
import io.hspmn.AdamwOptions;
import io.hspmn.Backend;
import io.hspmn.HspmnConfig;
import io.hspmn.InvalidArgumentException;
import io.hspmn.ModelConfig;
import io.hspmn.Routing;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.function.BiConsumer;
import java.util.function.Function;

/**
 * Everything a training run is told: data, model shape, optimisation, schedule, evaluation, checkpoints.
 * Built with {@link #builder()} or from {@code --name value} pairs ({@link #OPTIONS}, which the CLI, the
 * checkpoint's config JSON and resume all go through, so one table names every option once).
 *
 * <p>Routing defaults to THRESHOLD: top-k picks the k highest scores of the whole sequence, so whether
 * token s is routed depends on tokens after s. In a next-byte language model that leaks the future into
 * the prediction of s (training looks better than any causal decoder could do); threshold routing
 * decides each token from its own score alone and is causal.
 */
public final class TrainOptions {
    /** How an option behaves across save and resume. */
    public enum Scope {
        /** The model's shape: stored in the checkpoint's model config; a resumed run must keep it. */
        MODEL,
        /** Fixed for the run (it decides batches, noise or the update): stored; a resumed run must keep it. */
        RUN,
        /** Stored, and a resumed run may change it. */
        ADJUSTABLE,
        /** This invocation only: not stored. */
        SESSION
    }

    /**
     * One {@code --name value} option.
     *
     * @param arg what the value is, for the help text (null for a flag without value)
     */
    public record Option(String name, String arg, String help, Scope scope, BiConsumer<Builder, String> set,
                         Function<TrainOptions, String> get) {
        public boolean isFlag() {
            return arg == null;
        }

        /** The JSON key of a stored option: the name in snake_case. */
        public String jsonKey() {
            return name.replace('-', '_');
        }
    }

    private final Path data;
    private final double valFraction;
    private final int layers;
    /** Every block option (the fields of hspmn_block_params): see "block options" below. */
    private final HspmnConfig block;
    private final int seqLen;
    private final int batch;
    private final int gradAccum;
    private final long steps;
    private final float lr;
    private final float beta2;
    private final long warmup;
    private final float minLrRatio;
    private final float weightDecay;
    private final float clip;
    private final long auxWarmup;
    private final float routerBiasRate;
    private final long seed;
    private final float dropout;
    private final long evalEvery;
    private final int earlyStop;
    private final int evalBatches;
    private final long saveEvery;
    private final Path out;
    private final boolean resume;
    private final boolean keepBest;
    private final boolean recompute;
    private final Backend backend;
    private final int threads;
    private final long stopAfter;
    private final int maxSkipped;
    private final ParallelOptions parallel;

    private TrainOptions(Builder b) {
        data = b.data;
        valFraction = b.valFraction;
        layers = b.layers;
        block = b.block.build();
        seqLen = b.seqLen;
        batch = b.batch;
        gradAccum = b.gradAccum;
        steps = b.steps;
        lr = b.lr;
        beta2 = b.beta2;
        warmup = b.warmup;
        minLrRatio = b.minLrRatio;
        weightDecay = b.weightDecay;
        clip = b.clip;
        auxWarmup = b.auxWarmup < 0 ? b.warmup : b.auxWarmup;
        routerBiasRate = b.routerBiasRate;
        seed = b.seed;
        dropout = b.dropout;
        evalEvery = b.evalEvery;
        earlyStop = b.earlyStop;
        evalBatches = b.evalBatches;
        saveEvery = b.saveEvery;
        out = b.out;
        resume = b.resume;
        keepBest = b.keepBest;
        recompute = b.recompute;
        backend = b.backend;
        threads = b.threads;
        stopAfter = b.stopAfter;
        maxSkipped = b.maxSkipped;
        parallel = b.parallel.build();
    }

    public static Builder builder() {
        return new Builder();
    }

    public Builder toBuilder() {
        Builder b = new Builder();
        for (Option o : OPTIONS) {
            String v = o.get().apply(this);
            if (v != null) {
                o.set().accept(b, v);
            }
        }
        return b;
    }

    // ---- block options: one per field of hspmn_block_params (HspmnConfig.FIELDS) ------------------------

    /** How a block field shows on the command line. */
    private record BlockOption(String name, String arg, String help) {
    }

    /**
     * The block options whose name or help is not the generic one (--heads is num_heads, --rho is
     * sparsity_k). Any other field of hspmn_block_params is an option with no edit here: --kebab-case of its
     * C name, its comment in hspmn.h as help, the library's default shown; it is stored in the model config.
     */
    private static final Map<String, BlockOption> BLOCK_OPTIONS = Map.ofEntries(
            Map.entry("dim", new BlockOption("dim", "D", "model width")),
            Map.entry("num_heads", new BlockOption("heads", "H",
                    "attention heads (must divide --dim, head width even)")),
            Map.entry("num_kv_heads", new BlockOption("kv-heads", "HKV", "key/value heads (must divide --heads)")),
            Map.entry("mlp_ratio", new BlockOption("mlp-ratio", "R", "SwiGLU hidden width = R * dim")),
            Map.entry("conv_kernel", new BlockOption("conv-kernel", "K", "causal depthwise conv width")),
            Map.entry("routing", new BlockOption("routing", "threshold|topk",
                    "threshold is causal; topk looks at the whole sequence and leaks the future into a next-byte model")),
            Map.entry("rope_base", new BlockOption("rope-base", "B", "rotary embedding base, > 1")),
            Map.entry("sparsity_k", new BlockOption("rho", "P",
                    "target fraction of tokens routed to attention, in (0, 1]")),
            Map.entry("router_sparsity_coef", new BlockOption("router-sparsity-coef", "X",
                    "weight of the aux loss pulling the mean routing probability to its target")),
            Map.entry("router_entropy_coef", new BlockOption("router-entropy-coef", "X",
                    "weight of the aux loss's routing entropy term")),
            Map.entry("norm_eps", new BlockOption("norm-eps", "E", "RMSNorm epsilon, > 0")));

    private static Option blockOption(HspmnConfig.Field f) {
        BlockOption o = BLOCK_OPTIONS.getOrDefault(f.name(), new BlockOption(f.name().replace('_', '-'),
                f.names().isEmpty() ? (f.isInteger() ? "N" : "X") : String.join("|", f.names().values()),
                (f.doc().isEmpty() ? "" : f.doc() + " ") + "(hspmn.h: hspmn_block_params." + f.name() + ")"));
        String name = o.name();
        return new Option(name, o.arg(), o.help(), Scope.MODEL, (b, v) -> b.block.set(f.name(), blockValue(name, f, v)),
                t -> t.block.text(f.name()));
    }

    private static Number blockValue(String option, HspmnConfig.Field f, String v) {
        try {
            return f.parse(v);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--" + option + ": '" + v + "' is not " + e.getMessage());
        }
    }

    /** {@code options} with one option per block field before --layers; names must not clash. */
    private static List<Option> withBlockOptions(Option... options) {
        List<Option> all = new ArrayList<>();
        for (Option o : options) {
            if (o.name().equals("layers")) {
                HspmnConfig.FIELDS.forEach(f -> all.add(blockOption(f)));
            }
            all.add(o);
        }
        if (all.stream().map(Option::name).distinct().count() != all.size()) {
            throw new IllegalStateException("a field of hspmn_block_params is named like a training option: "
                    + all.stream().map(Option::name).toList() + "; give it a name in TrainOptions.BLOCK_OPTIONS");
        }
        return List.copyOf(all);
    }

    // ---- the option table ----------------------------------------------------------------------

    /** Every option, in help order: block options before --layers, the data-parallel ones ({@link ParallelOptions#OPTIONS}) last. */
    public static final List<Option> OPTIONS = concat(withBlockOptions(
            new Option("data", "PATH", "UTF-8 text file or folder of them (byte-level, vocabulary 256)", Scope.ADJUSTABLE,
                    (b, v) -> b.data(Path.of(v)), o -> o.data == null ? null : o.data.toString()),
            new Option("out", "DIR", "where checkpoint.safetensors, metrics.jsonl and report.html go", Scope.SESSION,
                    (b, v) -> b.out(Path.of(v)), o -> o.out == null ? null : o.out.toString()),
            new Option("resume", null, "continue the run whose checkpoint is in --out (same batches, noise and schedule)",
                    Scope.SESSION, (b, v) -> b.resume(Boolean.parseBoolean(v)), o -> Boolean.toString(o.resume)),
            new Option("keep-best", null, "also keep best.safetensors in --out: the checkpoint of the best validation "
                    + "so far (small data overfits: nanoGPT keeps only its best), for hspmn eval / sample", Scope.SESSION,
                    (b, v) -> b.keepBest(Boolean.parseBoolean(v)), o -> Boolean.toString(o.keepBest)),
            new Option("layers", "L", "number of HSPMN blocks", Scope.MODEL, (b, v) -> b.layers(i("layers", v)),
                    o -> Integer.toString(o.layers)),
            new Option("seq-len", "S", "bytes per training sequence", Scope.RUN, (b, v) -> b.seqLen(i("seq-len", v)),
                    o -> Integer.toString(o.seqLen)),
            new Option("batch", "B", "sequences per micro-batch and rank (the global batch is B x --gpus x --nodes)", Scope.RUN, (b, v) -> b.batch(i("batch", v)),
                    o -> Integer.toString(o.batch)),
            new Option("grad-accum", "A", "micro-batches per optimizer step (gradients averaged)", Scope.RUN,
                    (b, v) -> b.gradAccum(i("grad-accum", v)), o -> Integer.toString(o.gradAccum)),
            new Option("steps", "N", "optimizer steps of the whole run (the cosine schedule ends here)", Scope.ADJUSTABLE,
                    (b, v) -> b.steps(l("steps", v)), o -> Long.toString(o.steps)),
            new Option("lr", "LR", "peak learning rate", Scope.RUN, (b, v) -> b.lr(f("lr", v)), o -> Float.toString(o.lr)),
            new Option("beta2", "B2", "AdamW's second-moment decay, in [0, 1) (beta1 is 0.9)", Scope.RUN,
                    (b, v) -> b.beta2(f("beta2", v)), o -> Float.toString(o.beta2)),
            new Option("warmup", "N", "linear learning-rate warm-up steps", Scope.RUN, (b, v) -> b.warmup(l("warmup", v)),
                    o -> Long.toString(o.warmup)),
            new Option("min-lr-ratio", "R", "cosine decay ends at lr * R", Scope.RUN,
                    (b, v) -> b.minLrRatio(f("min-lr-ratio", v)), o -> Float.toString(o.minLrRatio)),
            new Option("weight-decay", "WD", "decoupled AdamW decay of 2-D weights", Scope.RUN,
                    (b, v) -> b.weightDecay(f("weight-decay", v)), o -> Float.toString(o.weightDecay)),
            new Option("clip", "C", "global gradient-norm clipping bound (0: off)", Scope.RUN, (b, v) -> b.clip(f("clip", v)),
                    o -> Float.toString(o.clip)),
            new Option("aux-warmup", "N", "steps over which the aux target anneals from 0.8 to --rho (default: --warmup)",
                    Scope.RUN, (b, v) -> b.auxWarmup(l("aux-warmup", v)), o -> Long.toString(o.auxWarmup)),
            new Option("router-bias-rate", "G", "threshold routing: after each step every layer's router bias moves by G "
                    + "toward routing the aux target's share of tokens without noise (0: off)", Scope.RUN,
                    (b, v) -> b.routerBiasRate(f("router-bias-rate", v)), o -> Float.toString(o.routerBiasRate)),
            new Option("seed", "N", "seeds the initial weights, the batch order and the routing noise", Scope.RUN,
                    (b, v) -> b.seed(l("seed", v)), o -> Long.toString(o.seed)),
            new Option("dropout", "P", "residual dropout on the reflexive and attention branches while training, in "
                    + "[0, 1) (0: off); masks keyed like the routing noise, so --resume drops the same; evaluation "
                    + "never drops", Scope.RUN, (b, v) -> b.dropout(f("dropout", v)), o -> Float.toString(o.dropout)),
            new Option("val-fraction", "F", "share of every file held out for validation, in (0, 1)", Scope.RUN,
                    (b, v) -> b.valFraction(d("val-fraction", v)), o -> Double.toString(o.valFraction)),
            new Option("eval-every", "N", "validate every N steps (0: only at the end)", Scope.ADJUSTABLE,
                    (b, v) -> b.evalEvery(l("eval-every", v)), o -> Long.toString(o.evalEvery)),
            new Option("early-stop", "N", "stop once N validations in a row have not improved on the run's best "
                    + "(small data overfits; the lr schedule still spans --steps; 0: off)", Scope.ADJUSTABLE,
                    (b, v) -> b.earlyStop(i("early-stop", v)), o -> Integer.toString(o.earlyStop)),
            new Option("eval-batches", "N", "validation batches of --batch sequences per evaluation", Scope.ADJUSTABLE,
                    (b, v) -> b.evalBatches(i("eval-batches", v)), o -> Integer.toString(o.evalBatches)),
            new Option("save-every", "N", "checkpoint every N steps (0: only at the end)", Scope.ADJUSTABLE,
                    (b, v) -> b.saveEvery(l("save-every", v)), o -> Long.toString(o.saveEvery)),
            new Option("stop-after", "N", "end this invocation after step N with a checkpoint (0: run to --steps); "
                    + "the schedule still spans --steps, so --resume continues exactly", Scope.SESSION,
                    (b, v) -> b.stopAfter(l("stop-after", v)), o -> Long.toString(o.stopAfter)),
            new Option("max-skipped", "N", "stop with an error after N consecutive steps skipped for a non-finite "
                    + "gradient norm, keeping the last checkpoint written before them (0: never stop)", Scope.SESSION,
                    (b, v) -> b.maxSkipped(i("max-skipped", v)), o -> Integer.toString(o.maxSkipped)),
            new Option("recompute", null, "keep each layer's input instead of its activations and re-run each layer's "
                    + "forward in backward: the same numbers for about a third more compute, in the memory of one "
                    + "layer's activations (larger --batch on one GPU)", Scope.SESSION,
                    (b, v) -> b.recompute(Boolean.parseBoolean(v)), o -> Boolean.toString(o.recompute)),
            new Option("backend", "auto|cpu|cuda", "where to compute (auto: CUDA when present)", Scope.SESSION,
                    (b, v) -> b.backend(backend(v)), o -> o.backend.name().toLowerCase(Locale.ROOT)),
            new Option("threads", "N", "CPU worker threads per rank (0: all cores, shared out among --gpus CPU ranks)",
                    Scope.SESSION, (b, v) -> b.threads(i("threads", v)),
                    o -> Integer.toString(o.threads))), ParallelOptions.OPTIONS);

    private static List<Option> concat(List<Option> a, List<Option> b) {
        List<Option> all = new ArrayList<>(a);
        all.addAll(b);
        return List.copyOf(all);
    }

    // ---- lookup ----------------------------------------------------------------------------------

    private static final Map<String, Option> BY_NAME = new LinkedHashMap<>();

    static {
        for (Option o : OPTIONS) {
            BY_NAME.put(o.name(), o);
        }
    }

    /** The option called {@code name} (without dashes), or null. */
    public static Option option(String name) {
        return BY_NAME.get(name);
    }

    static int i(String name, String v) {
        try {
            return Integer.parseInt(v.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--" + name + ": '" + v + "' is not an integer");
        }
    }

    private static long l(String name, String v) {
        try {
            return Long.parseLong(v.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--" + name + ": '" + v + "' is not an integer");
        }
    }

    private static float f(String name, String v) {
        try {
            float x = Float.parseFloat(v.trim());
            if (!Float.isFinite(x)) {
                throw new NumberFormatException();
            }
            return x;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--" + name + ": '" + v + "' is not a finite number");
        }
    }

    private static double d(String name, String v) {
        try {
            double x = Double.parseDouble(v.trim());
            if (!Double.isFinite(x)) {
                throw new NumberFormatException();
            }
            return x;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException("--" + name + ": '" + v + "' is not a finite number");
        }
    }

    private static Backend backend(String v) {
        return switch (v.trim().toLowerCase(Locale.ROOT)) {
            case "auto" -> Backend.AUTO;
            case "cpu" -> Backend.CPU;
            case "cuda" -> Backend.CUDA;
            default -> throw new IllegalArgumentException("--backend: '" + v + "' is not auto, cpu or cuda");
        };
    }

    // ---- validation ----------------------------------------------------------------------------

    /**
     * Checks every value and the model they describe; the message names the option.
     *
     * @throws IllegalArgumentException naming the first bad option
     */
    public TrainOptions validate() {
        if (data == null) {
            throw new IllegalArgumentException("--data is required: the text to train on");
        }
        if (out == null) {
            throw new IllegalArgumentException("--out is required: the folder for the checkpoint, metrics and report");
        }
        atLeast("seq-len", seqLen, 1);
        atLeast("batch", batch, 1);
        atLeast("grad-accum", gradAccum, 1);
        atLeast("steps", steps, 1);
        atLeast("warmup", warmup, 0);
        atLeast("aux-warmup", auxWarmup, 0);
        atLeast("eval-every", evalEvery, 0);
        atLeast("early-stop", earlyStop, 0);
        if (earlyStop > 0 && evalEvery == 0) {
            throw new IllegalArgumentException("--early-stop " + earlyStop + " needs validations during the run: set --eval-every");
        }
        atLeast("eval-batches", evalBatches, 1);
        atLeast("save-every", saveEvery, 0);
        atLeast("threads", threads, 0);
        atLeast("stop-after", stopAfter, 0);
        atLeast("max-skipped", maxSkipped, 0);
        parallel.validate(batch, seqLen);
        if (stopAfter > steps) {
            throw new IllegalArgumentException("--stop-after (" + stopAfter + ") is past --steps (" + steps + ")");
        }
        if ((long) batch * (seqLen + 1) > Integer.MAX_VALUE / 8) {
            throw new IllegalArgumentException("--batch x --seq-len (" + batch + " x " + seqLen + ") is too large");
        }
        if (!(lr > 0)) {
            throw new IllegalArgumentException("--lr (" + lr + ") must be > 0");
        }
        if (!(beta2 >= 0 && beta2 < 1)) {
            throw new IllegalArgumentException("--beta2 (" + beta2 + ") must be in [0, 1)");
        }
        if (!(minLrRatio >= 0 && minLrRatio <= 1)) {
            throw new IllegalArgumentException("--min-lr-ratio (" + minLrRatio + ") must be in [0, 1]");
        }
        if (!(weightDecay >= 0)) {
            throw new IllegalArgumentException("--weight-decay (" + weightDecay + ") must be >= 0");
        }
        if (!(routerBiasRate >= 0 && Float.isFinite(routerBiasRate))) {
            throw new IllegalArgumentException("--router-bias-rate (" + routerBiasRate + ") must be finite and >= 0 (0 turns "
                    + "router bias control off)");
        }
        if (!(clip >= 0)) {
            throw new IllegalArgumentException("--clip (" + clip + ") must be >= 0 (0 turns clipping off)");
        }
        if (!(dropout >= 0 && dropout < 1)) {
            throw new IllegalArgumentException("--dropout (" + dropout + ") must be in [0, 1): the probability of "
                    + "dropping an element of a residual branch (0 turns dropout off)");
        }
        if (!(valFraction > 0 && valFraction < 1)) {
            throw new IllegalArgumentException("--val-fraction (" + valFraction + ") must be in (0, 1)");
        }
        try {
            modelConfig().validate();
        } catch (InvalidArgumentException e) {
            throw new IllegalArgumentException(e.getMessage() + " (options " + String.join(" ", OPTIONS.stream()
                    .filter(o -> o.scope() == Scope.MODEL).map(o -> "--" + o.name()).toList()) + ")");
        }
        return this;
    }

    // also ParallelOptions' parsers and range checks
    static void atLeast(String name, long v, long min) {
        if (v < min) {
            throw new IllegalArgumentException("--" + name + " (" + v + ") must be >= " + min);
        }
    }

    /** The byte-level model these options describe. */
    public ModelConfig modelConfig() {
        return ModelConfig.byteLevel(layers, block);
    }

    /** The model options taken from a model config (what a resumed run trains). */
    public Builder withModel(ModelConfig m) {
        return toBuilder().layers(m.numLayers()).block(m.block());
    }

    // ---- stored form -----------------------------------------------------------------------------

    /** The RUN and ADJUSTABLE options as a JSON object (the model's are in the model config beside it). */
    public JsonObject toStoredJson() {
        JsonObject o = new JsonObject();
        for (Option opt : OPTIONS) {
            if (opt.scope() == Scope.RUN || opt.scope() == Scope.ADJUSTABLE) {
                String v = opt.get().apply(this);
                if (v == null) {
                    continue;
                }
                JsonPrimitive p;
                try {
                    p = new JsonPrimitive(new java.math.BigDecimal(v));
                } catch (NumberFormatException notNumber) {
                    p = new JsonPrimitive(v);
                }
                o.add(opt.jsonKey(), p);
            }
        }
        return o;
    }

    /**
     * Applies stored options onto {@code b}. Options stored before {@code router_bias_rate} existed
     * read it as 0: those runs trained without router bias control, and resume so.
     *
     * @throws IllegalArgumentException for an unknown key or a bad value, naming it
     */
    public static Builder applyStored(Builder b, JsonObject stored) {
        if (!stored.has(option("router-bias-rate").jsonKey())) {
            b.routerBiasRate(0f);
        }
        for (Map.Entry<String, JsonElement> e : stored.entrySet()) {
            Option opt = option(e.getKey().replace('_', '-'));
            if (opt == null || opt.scope() == Scope.MODEL || opt.scope() == Scope.SESSION) {
                throw new IllegalArgumentException("unknown training option \"" + e.getKey() + "\" in the checkpoint");
            }
            if (!e.getValue().isJsonPrimitive()) {
                throw new IllegalArgumentException("training option \"" + e.getKey() + "\" in the checkpoint is not a value");
            }
            opt.set().accept(b, e.getValue().getAsString());
        }
        return b;
    }

    /**
     * The options of a resumed run: {@code stored} (the checkpoint's, with its model), changed by the
     * options given on this command line. Giving a MODEL or RUN option with a different value is refused:
     * it would not continue the same run.
     *
     * @param given the options named on this command line, with the values as typed
     */
    public static TrainOptions forResume(TrainOptions stored, Map<String, String> given) {
        stored = resplitGlobalBatch(stored, given);
        Builder b = stored.toBuilder().resume(true);
        List<String> refused = new ArrayList<>();
        for (Map.Entry<String, String> e : given.entrySet()) {
            Option opt = Objects.requireNonNull(option(e.getKey()), e.getKey());
            if (opt.scope() == Scope.MODEL || opt.scope() == Scope.RUN) {
                Builder probe = stored.toBuilder();
                opt.set().accept(probe, e.getValue());
                String want = opt.get().apply(probe.build());
                String have = opt.get().apply(stored);
                if (!Objects.equals(want, have)) {
                    refused.add("--" + opt.name() + " " + e.getValue() + " (the checkpoint has " + have + ")");
                }
            } else {
                opt.set().accept(b, e.getValue());
            }
        }
        if (!refused.isEmpty()) {
            throw new IllegalArgumentException("a resumed run keeps the options it started with; these differ: "
                    + String.join(", ", refused) + ". Leave them out, or start a new run in another --out");
        }
        return b.build();
    }

    // ---- data parallel: the global batch ----------------------------------------------------------

    /** Sequences per micro-batch over all ranks: --batch x --gpus x --nodes. */
    public long globalBatch() {
        return (long) batch * parallel.world();
    }

    /**
     * A resumed run on another number of ranks: {@code stored} with the --gpus / --nodes given and the
     * per-rank --batch that keeps the stored global batch (--batch x ranks), so N ranks continue exactly
     * what M ranks started. A --batch given on the command line is taken as it is: when it changes the
     * global batch, the run goes on from the same sampler position (counted in windows, so no window is
     * skipped or seen twice; they are only grouped into larger or smaller batches), and the schedule
     * still counts optimizer steps; Trainer says so when it opens.
     *
     * @throws IllegalArgumentException the stored global batch does not split over the new ranks
     */
    static TrainOptions resplitGlobalBatch(TrainOptions stored, Map<String, String> given) {
        Builder b = stored.toBuilder();
        for (String k : List.of("gpus", "nodes", "batch")) {
            if (given.containsKey(k)) {
                b.set(k, given.get(k));
            }
        }
        TrainOptions wanted = b.build();
        int world = wanted.parallel.world();
        if (world < 1 || given.containsKey("batch")) {
            return wanted;  // validate() names a bad --gpus / --nodes
        }
        long global = stored.globalBatch();
        if (global % world != 0) {
            throw new IllegalArgumentException("the checkpoint's global batch of " + global + " sequences (--batch "
                    + stored.batch + " x " + stored.parallel.world() + " ranks) does not split over " + world
                    + " ranks (--nodes x --gpus); choose a rank count that divides it, or pass --batch to set the "
                    + "sequences per rank (the global batch then changes)");
        }
        return b.batch(Math.toIntExact(global / world)).build();
    }

    // ---- getters ---------------------------------------------------------------------------------

    public Path data() { return data; }
    public double valFraction() { return valFraction; }
    public int layers() { return layers; }
    /** Every block option, as one block's config. */
    public HspmnConfig block() { return block; }
    public int dim() { return block.dim(); }
    public int heads() { return block.numHeads(); }
    public int kvHeads() { return block.numKvHeads(); }
    public int mlpRatio() { return block.mlpRatio(); }
    public int convKernel() { return block.convKernel(); }
    public Routing routing() { return block.routing(); }
    public float rho() { return block.sparsityK(); }
    public float routerSparsityCoef() { return block.routerSparsityCoef(); }
    public float routerEntropyCoef() { return block.routerEntropyCoef(); }
    public int seqLen() { return seqLen; }
    public int batch() { return batch; }
    public int gradAccum() { return gradAccum; }
    public long steps() { return steps; }
    public float lr() { return lr; }
    public float beta2() { return beta2; }
    public long warmup() { return warmup; }
    public float minLrRatio() { return minLrRatio; }
    public float weightDecay() { return weightDecay; }
    public float clip() { return clip; }
    public long auxWarmup() { return auxWarmup; }
    /** Router bias control's step per optimizer step (native/README.md "Router bias control"); 0: off. */
    public float routerBiasRate() { return routerBiasRate; }
    public long seed() { return seed; }
    public float dropout() { return dropout; }
    public long evalEvery() { return evalEvery; }
    public int earlyStop() { return earlyStop; }
    public int evalBatches() { return evalBatches; }
    public long saveEvery() { return saveEvery; }
    public Path out() { return out; }
    public boolean resume() { return resume; }
    public boolean keepBest() { return keepBest; }
    public boolean recompute() { return recompute; }
    public Backend backend() { return backend; }
    public int threads() { return threads; }
    public long stopAfter() { return stopAfter; }
    public int maxSkipped() { return maxSkipped; }
    /** The data-parallel options (--gpus, --comm, --nodes...). */
    public ParallelOptions parallel() { return parallel; }

    /** The step this invocation ends at: --stop-after when set, else --steps. */
    public long endStep() {
        return stopAfter > 0 ? stopAfter : steps;
    }

    /** Every option as {@code --name value}, one per line. */
    public String describe() {
        StringBuilder sb = new StringBuilder();
        for (Option o : OPTIONS) {
            String v = o.get().apply(this);
            sb.append("  --").append(o.name()).append(' ').append(v == null ? "-" : v).append('\n');
        }
        return sb.toString();
    }

    @Override
    public boolean equals(Object other) {
        if (!(other instanceof TrainOptions t)) {
            return false;
        }
        for (Option o : OPTIONS) {
            if (!Objects.equals(o.get().apply(this), o.get().apply(t))) {
                return false;
            }
        }
        return true;
    }

    @Override
    public int hashCode() {
        return describe().hashCode();
    }

    @Override
    public String toString() {
        return "TrainOptions{" + describe().strip().replace("\n  ", ", ") + "}";
    }

    /** --router-bias-rate's default; checkpoints written before the option existed resume with 0 (off). */
    public static final float DEFAULT_ROUTER_BIAS_RATE = 0.01f;

    /** Mutable builder starting from the defaults (a small CPU-sized run). */
    public static final class Builder {
        private Path data;
        private double valFraction = 0.05;
        private int layers = 2;
        /** The library's defaults (hspmn_block_default_params) at a CPU size, with causal routing. */
        private HspmnConfig.Builder block = HspmnConfig.builder().dim(128).numHeads(4).numKvHeads(2)
                .routing(Routing.THRESHOLD);
        private int seqLen = 256;
        private int batch = 8;
        private int gradAccum = 1;
        private long steps = 1000;
        private float lr = 3e-3f;
        /** AdamwOptions.BETA2; a checkpoint written before this option existed has no beta2 and trained with it. */
        private float beta2 = AdamwOptions.BETA2;
        private long warmup = 100;
        private float minLrRatio = 0.1f;
        private float weightDecay = 0.1f;
        private float clip = 1.0f;
        private long auxWarmup = -1;
        private float routerBiasRate = DEFAULT_ROUTER_BIAS_RATE;
        private long seed = 1;
        private float dropout;
        private long evalEvery = 100;
        private int earlyStop;
        private int evalBatches = 8;
        private long saveEvery = 500;
        private Path out;
        private boolean resume;
        private boolean keepBest;
        private boolean recompute;
        private Backend backend = Backend.AUTO;
        private int threads;
        private long stopAfter;
        private int maxSkipped = 5;
        private final ParallelOptions.Builder parallel = new ParallelOptions.Builder();

        private Builder() {
        }

        /** The data-parallel options, set in place. */
        public ParallelOptions.Builder parallel() {
            return parallel;
        }

        /**
         * Sets option {@code name} (without dashes) from its text form.
         *
         * @throws IllegalArgumentException for an unknown option or a bad value, naming it
         */
        public Builder set(String name, String value) {
            Option o = option(name);
            if (o == null) {
                throw new IllegalArgumentException("unknown option --" + name);
            }
            o.set().accept(this, value);
            return this;
        }

        public Builder data(Path v) { data = v; return this; }
        public Builder valFraction(double v) { valFraction = v; return this; }
        public Builder layers(int v) { layers = v; return this; }
        /** Every block option at once (a model config's block). */
        public Builder block(HspmnConfig v) { block = v.toBuilder(); return this; }
        public Builder dim(int v) { block.dim(v); return this; }
        public Builder heads(int v) { block.numHeads(v); return this; }
        public Builder kvHeads(int v) { block.numKvHeads(v); return this; }
        public Builder mlpRatio(int v) { block.mlpRatio(v); return this; }
        public Builder convKernel(int v) { block.convKernel(v); return this; }
        public Builder routing(Routing v) { block.routing(Objects.requireNonNull(v)); return this; }
        public Builder rho(float v) { block.sparsityK(v); return this; }
        public Builder routerSparsityCoef(float v) { block.routerSparsityCoef(v); return this; }
        public Builder routerEntropyCoef(float v) { block.routerEntropyCoef(v); return this; }
        public Builder seqLen(int v) { seqLen = v; return this; }
        public Builder batch(int v) { batch = v; return this; }
        public Builder gradAccum(int v) { gradAccum = v; return this; }
        public Builder steps(long v) { steps = v; return this; }
        public Builder lr(float v) { lr = v; return this; }
        public Builder beta2(float v) { beta2 = v; return this; }
        public Builder warmup(long v) { warmup = v; return this; }
        public Builder minLrRatio(float v) { minLrRatio = v; return this; }
        public Builder weightDecay(float v) { weightDecay = v; return this; }
        public Builder clip(float v) { clip = v; return this; }
        /** Negative: the same as warmup. */
        public Builder auxWarmup(long v) { auxWarmup = v; return this; }
        public Builder routerBiasRate(float v) { routerBiasRate = v; return this; }
        public Builder seed(long v) { seed = v; return this; }
        public Builder dropout(float v) { dropout = v; return this; }
        public Builder evalEvery(long v) { evalEvery = v; return this; }
        public Builder earlyStop(int v) { earlyStop = v; return this; }
        public Builder evalBatches(int v) { evalBatches = v; return this; }
        public Builder saveEvery(long v) { saveEvery = v; return this; }
        public Builder out(Path v) { out = v; return this; }
        public Builder resume(boolean v) { resume = v; return this; }
        public Builder keepBest(boolean v) { keepBest = v; return this; }
        public Builder recompute(boolean v) { recompute = v; return this; }
        public Builder backend(Backend v) { backend = Objects.requireNonNull(v); return this; }
        public Builder threads(int v) { threads = v; return this; }
        public Builder stopAfter(long v) { stopAfter = v; return this; }
        public Builder maxSkipped(int v) { maxSkipped = v; return this; }

        /** Builds without validating ({@link TrainOptions#validate()} does that). */
        public TrainOptions build() {
            return new TrainOptions(this);
        }
    }
}
