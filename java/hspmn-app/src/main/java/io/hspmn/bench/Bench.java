package io.hspmn.bench;

import io.hspmn.Backend;
import io.hspmn.Block;
import io.hspmn.Context;
import io.hspmn.ContextOptions;
import io.hspmn.DType;
import io.hspmn.ForwardGraph;
import io.hspmn.ForwardOptions;
import io.hspmn.Hspmn;
import io.hspmn.HspmnConfig;
import io.hspmn.HspmnException;
import io.hspmn.MemoryKind;
import io.hspmn.Status;
import io.hspmn.Tensor;
import io.hspmn.metrics.JsonFile;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The bench command on the Java API: HSPMN blocks timed in the modes of the CUDA issue, with the
 * options, sizes, input data and JSON fields of native {@code hspmn_bench} (and of
 * native/bench/hspmn_block.py), so that the JVM path and the native one compare call for call.
 *
 * <pre>ci/bench.sh [--mode throughput|longctx|train|stress|all] [--backend auto|cpu|cuda] [--small] ...</pre>
 * ({@code --help} lists every option.) Exit status 0 when every configuration ran, 1 otherwise or on
 * any error, always with a message.
 */
public final class Bench {
    private static final double GIB = 1L << 30;

    private Bench() {
    }

    /** graph: inference replayed from a CUDA graph captured once (--graph). */
    record Config(String name, long batch, long seq, boolean train, boolean graph) {
        Config(String name, long batch, long seq, boolean train) {
            this(name, batch, seq, train, false);
        }
    }

    /** One configuration's outcome: times when it ran, the status and message when it did not. */
    record Result(Config config, double ms, double tokS, double peakGib, Status status, String error) {
        boolean ok() {
            return error == null;
        }
    }

    public static void main(String[] args) {
        System.exit(run(args, System.out, System.err));
    }

    /** Runs the command; returns the exit status instead of exiting, for tests. */
    public static int run(String[] args, PrintStream out, PrintStream err) {
        BenchOptions o;
        try {
            o = BenchOptions.parse(args);
        } catch (IllegalArgumentException e) { // a bad option or value (BadOptionException, Routing.parse)
            err.println("error: " + e.getMessage() + " (--help lists the options)");
            return 1;
        }
        if (o.help) {
            out.print(BenchOptions.USAGE);
            return 0;
        }
        try {
            return runChecked(o, out, err);
        } catch (RuntimeException | IOException e) {
            err.println("error: " + (e.getMessage() != null ? e.getMessage() : e.toString()));
            return 1;
        } catch (LinkageError e) { // the native library did not load
            err.println("error: " + e);
            return 1;
        }
    }

    private static int runChecked(BenchOptions o, PrintStream out, PrintStream err) throws IOException {
        HspmnConfig config = config(o);
        try {
            config.validate();
        } catch (HspmnException e) {
            err.println("error: block configuration: " + e.getMessage());
            return 1;
        }
        ContextOptions copts = ContextOptions.defaults().withBackend(o.backend).withNumThreads(o.threads);
        Backend backend;
        try (Context probe = Context.create(copts)) { // one message for a missing backend, not one per run
            backend = probe.backend();
        } catch (HspmnException e) {
            err.println("error: no " + name(o.backend) + " context: " + e.getMessage());
            return 1;
        }
        out.printf(Locale.ROOT, "%s (Java), backend %s (asked %s); D=%d H=%d Hkv=%d F=%d rho=%s %s; median of %d after %d warm-up%n",
                Hspmn.version(), name(backend), name(o.backend), o.dim, o.heads, o.kvHeads, o.mlpRatio * o.dim,
                fmtRho(o.rho), o.routing.jsonName(), o.iters, o.warmup);
        if (o.graph && backend != Backend.CUDA) {
            err.println("error: --graph needs the CUDA backend (this run resolved to " + name(backend) + ")");
            return 1;
        }
        if (backend == Backend.CPU && !o.small) {
            err.println("note: the CPU backend at the GPU sizes takes very long; --small gives CPU sizes");
        }
        short[] patX = BenchInput.pattern(o.seed);
        short[] patDy = BenchInput.pattern(o.seed + 0x5EED);
        Path json = o.json == null ? null : Path.of(o.json);
        if (json != null) { // an unwritable path fails now, not after the runs
            Files.writeString(json, "");
        }

        boolean all = o.mode.equals("all");
        List<Config> cfgs = new ArrayList<>();
        // With --graph each inference config is followed by its graph twin (same B, S, same block seed).
        java.util.function.BiConsumer<String, long[]> inference = (n, bs) -> {
            cfgs.add(new Config(n, bs[0], bs[1], false));
            if (o.graph) cfgs.add(new Config(n + " graph", bs[0], bs[1], false, true));
        };
        if (all || o.mode.equals("throughput")) inference.accept("hspmn throughput", new long[] {o.batch, o.seq});
        if (all || o.mode.equals("longctx")) {
            for (long s : o.longSeq) inference.accept("hspmn longctx", new long[] {1, s});
        }
        if (all || o.mode.equals("train")) cfgs.add(new Config("hspmn train", o.batch, o.seq, true));

        List<Result> results = new ArrayList<>();
        boolean failed = false;
        for (Config c : cfgs) {
            Result r = runConfig(o, copts, config, c, patX, patDy);
            results.add(r);
            printLine(out, r);
            failed |= !r.ok();
        }
        Map<String, Object> stress = null;
        if (all || o.mode.equals("stress")) {
            long maxS = 0;
            double peak = 0;
            String stoppedBy;
            String message;
            for (long s = o.stressStart; ; s *= 2) {
                Result r = runConfig(o, copts, config, new Config("hspmn stress", 1, s, false), patX, patDy);
                printLine(out, r);
                results.add(r);
                if (!r.ok()) {
                    // Out of memory is the answer stress looks for, and so is the attention kernels' int32
                    // indexing of one sequence (SHAPE): a limit of the library; anything else is a failure.
                    boolean oom = r.status() == Status.OUT_OF_MEMORY, shape = r.status() == Status.SHAPE;
                    stoppedBy = oom ? "out_of_memory" : shape ? "shape_limit" : "error";
                    message = r.error();
                    failed |= !(oom || shape) || maxS == 0;
                    break;
                }
                maxS = s;
                peak = r.peakGib();
                if (s > o.maxSeq / 2) {
                    stoppedBy = "max_seq";
                    message = "next S " + 2 * s + " is over --max-seq " + o.maxSeq;
                    break;
                }
            }
            if (maxS > 0) {
                out.printf(Locale.ROOT, "stress: largest B=1 context that ran: S=%d, peak %.3f GiB (stopped by %s)%n",
                        maxS, peak, stoppedBy);
            } else {
                out.printf(Locale.ROOT, "stress: nothing ran from S=%d: %s%n", o.stressStart, message);
            }
            stress = new LinkedHashMap<>();
            stress.put("max_S", maxS);
            stress.put("peak_gib", peak);
            stress.put("stopped_by", stoppedBy);
            stress.put("message", message);
        }

        printTable(out, results);
        // What a graph saves: the same forward, ordinary vs replayed, both closed by a synchronize.
        for (int i = 1; i < results.size(); i++) {
            Result g = results.get(i);
            Result f = results.get(i - 1);
            if (!g.config().graph() || !g.ok() || !f.ok() || f.config().graph() || f.config().batch() != g.config().batch()
                    || f.config().seq() != g.config().seq()) {
                continue;
            }
            out.printf(Locale.ROOT, "graph B=%d S=%d: %.3f ms per replay vs %.3f ms per forward (%.3f ms, %.1f%% saved)%n",
                    g.config().batch(), g.config().seq(), g.ms(), f.ms(), f.ms() - g.ms(), 100 * (f.ms() - g.ms()) / f.ms());
        }
        if (json != null) {
            writeJson(json, o, backend, results, stress);
            out.println("json: " + json);
        }
        return failed ? 1 : 0;
    }

    private static HspmnConfig config(BenchOptions o) {
        return HspmnConfig.builder()
                .dim(o.dim)
                .numHeads(o.heads)
                .numKvHeads(o.kvHeads)
                .mlpRatio(o.mlpRatio)
                .routing(o.routing)
                .sparsityK((float) o.rho)
                .build();
    }

    /**
     * A fresh context per configuration, so each peak holds its own caches and nothing of the last
     * one. The peak is reset once the inputs are in place (device inputs go through a host tensor,
     * which would otherwise count): from there on it covers the block, its outputs, caches and
     * scratch with the inputs live, as native/bench/hspmn_block.py measures.
     */
    private static Result runConfig(BenchOptions o, ContextOptions copts, HspmnConfig config, Config c,
                                    short[] patX, short[] patDy) {
        try (Context ctx = Context.create(copts)) {
            MemoryKind mem = ctx.backend() == Backend.CUDA ? MemoryKind.DEVICE : MemoryKind.HOST;
            long[] bsd = {c.batch(), c.seq(), o.dim};
            Tensor x = BenchInput.filled(ctx, mem, patX, bsd);                          // x: [B, S, D] bf16
            Tensor dOut = c.train() ? BenchInput.filled(ctx, mem, patDy, bsd) : null;   // d_out: [B, S, D] bf16
            ctx.synchronize();
            Hspmn.resetPeakBytes();
            Block block = Block.create(ctx, config, o.seed);
            Tensor out = Tensor.create(ctx, DType.BF16, mem, bsd);                      // out: [B, S, D] bf16
            Runnable step;
            if (c.graph()) {
                // The capture runs the forward once (sizing the scratch) and records the next run;
                // closing the context closes the graph before the block and tensors.
                ForwardGraph graph = block.captureForward(x, out, null, ForwardOptions.inference());
                step = graph::launch;
            } else if (c.train()) {
                Tensor dX = Tensor.create(ctx, DType.BF16, mem, bsd);                   // d_x: [B, S, D] bf16
                ForwardOptions training = ForwardOptions.training(o.seed, 0, 0);
                step = () -> {
                    block.forward(x, out, null, training); // aux not read back: no sync, as the native command
                    block.backward(dOut, 0f, dX); // d_aux 0, as the native command's NULL
                };
            } else {
                ForwardOptions inference = ForwardOptions.inference();
                step = () -> block.forward(x, out, null, inference);
            }
            for (int i = 0; i < o.warmup; i++) {
                step.run();
            }
            ctx.synchronize();
            double[] ts = new double[o.iters];
            for (int i = 0; i < o.iters; i++) {
                long t0 = System.nanoTime();
                step.run();
                ctx.synchronize();
                ts[i] = (System.nanoTime() - t0) / 1e6;
            }
            Arrays.sort(ts);
            double ms = ts[ts.length / 2];
            double peak = Hspmn.allocStats().peakBytes() / GIB;
            return new Result(c, ms, c.batch() * c.seq() / (ms / 1e3), peak, Status.OK, null);
        } catch (HspmnException e) { // closing the context above closed every tensor and block of it
            return new Result(c, 0, 0, 0, e.status(), e.getMessage());
        } catch (OutOfMemoryError e) {
            return new Result(c, 0, 0, 0, Status.OUT_OF_MEMORY, "Java heap: " + e.getMessage());
        }
    }

    private static void printLine(PrintStream out, Result r) {
        Config c = r.config();
        if (r.ok()) {
            out.printf(Locale.ROOT, "%-24s B=%3d S=%7d  %12.0f tok/s  %10.2f ms  peak %8.3f GiB%n",
                    c.name(), c.batch(), c.seq(), r.tokS(), r.ms(), r.peakGib());
        } else {
            out.printf(Locale.ROOT, "%-24s B=%3d S=%7d  failed: %s%n", c.name(), c.batch(), c.seq(), r.error());
        }
        out.flush();
    }

    private static void printTable(PrintStream out, List<Result> results) {
        out.printf(Locale.ROOT, "%n%-24s %4s %8s %14s %11s %10s%n", "name", "B", "S", "tok/s", "ms", "peak GiB");
        for (Result r : results) {
            Config c = r.config();
            if (r.ok()) {
                out.printf(Locale.ROOT, "%-24s %4d %8d %14.0f %11.2f %10.3f%n", c.name(), c.batch(), c.seq(),
                        r.tokS(), r.ms(), r.peakGib());
            } else {
                out.printf(Locale.ROOT, "%-24s %4d %8d %14s %11s %10s  (%s)%n", c.name(), c.batch(), c.seq(),
                        "-", "-", "-", Hspmn.statusName(r.status()));
            }
        }
    }

    private static void writeJson(Path path, BenchOptions o, Backend backend, List<Result> results,
                                  Map<String, Object> stress) throws IOException {
        Map<String, Object> root = new LinkedHashMap<>();
        root.put("runtime", "java");
        root.put("version", Hspmn.version());
        root.put("backend", name(backend));
        Map<String, Object> cfg = new LinkedHashMap<>();
        cfg.put("D", o.dim);
        cfg.put("H", o.heads);
        cfg.put("Hkv", o.kvHeads);
        cfg.put("mlp_ratio", o.mlpRatio);
        cfg.put("rho", o.rho);
        cfg.put("routing", o.routing.jsonName());
        cfg.put("iters", o.iters);
        cfg.put("warmup", o.warmup);
        cfg.put("threads", o.threads);
        root.put("config", cfg);
        List<Map<String, Object>> rs = new ArrayList<>();
        for (Result r : results) {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("name", r.config().name());
            m.put("B", r.config().batch());
            m.put("S", r.config().seq());
            m.put("train", r.config().train());
            if (r.config().graph()) {
                m.put("graph", true);
            }
            if (r.ok()) {
                m.put("rho", o.rho);
                m.put("ms", r.ms());
                m.put("tok_s", r.tokS());
                m.put("peak_gib", r.peakGib());
            } else {
                m.put("status", Hspmn.statusName(r.status()));
                m.put("error", r.error());
            }
            rs.add(m);
        }
        root.put("results", rs);
        if (stress != null) {
            root.put("stress", stress);
        }
        JsonFile.write(path, root);
    }

    private static String name(Backend b) {
        return b.name().toLowerCase(Locale.ROOT);
    }

    private static String fmtRho(double rho) {
        return String.format(Locale.ROOT, "%s", (float) rho);
    }
}
