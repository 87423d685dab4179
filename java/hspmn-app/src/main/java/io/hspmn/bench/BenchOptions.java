package io.hspmn.bench;

import io.hspmn.Backend;
import io.hspmn.Routing;
import io.hspmn.args.BadOptionException;
import io.hspmn.args.CommandLine;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;

/** The command line of {@link Bench}: the same options, defaults and checks as native hspmn_bench. */
final class BenchOptions {
    static final String USAGE = """
            usage: Bench [options]
              --mode throughput|longctx|train|stress|all   (throughput)
              --backend auto|cpu|cuda                      (auto)
              --small        CPU-sized defaults: B=2 S=512 D=256 H=4 Hkv=2, long-seq 2048,4096,
                             stress-start 1024, max-seq 16384 (explicit options still win)
              --batch 64 --seq 4096 --dim 2048 --heads 16 --kv-heads 4 --mlp-ratio 4
              --rho 0.2 --routing topk|threshold --iters 10 --warmup 2 --threads 0 --seed 1
              --long-seq 65536,131072   longctx sequence lengths (B=1)
              --stress-start 65536      stress: first S at B=1, doubled until out of memory ...
              --max-seq 4194304         ... or until the next S would pass this cap
              --graph                   CUDA: after each inference config, the same forward captured once as a
                                        CUDA graph (Block.captureForward) and timed per replay
              --json FILE               write the results as JSON
            Each time is the median of --iters calls, each closed by Context.synchronize, after
            --warmup calls; peak is Hspmn.allocStats' peak of library-held bytes during the block's life.
            """;

    private static final Set<String> VALUED = Set.of("mode", "backend", "batch", "seq", "dim", "heads", "kv-heads",
            "mlp-ratio", "rho", "routing", "iters", "warmup", "threads", "seed", "long-seq", "stress-start", "max-seq", "json");
    private static final long I32 = Integer.MAX_VALUE;
    private static final long MAX_SEQ = 1L << 40;

    String mode;
    Backend backend;
    long batch, seq, seed, stressStart, maxSeq;
    int dim, heads, kvHeads, mlpRatio, threads, iters, warmup;
    double rho;
    Routing routing;
    List<Long> longSeq;
    String json;
    boolean small, graph, help;

    /** The options, the defaults of USAGE for those not given; a mistake is a {@link BadOptionException}. */
    static BenchOptions parse(String[] args) {
        CommandLine c = CommandLine.parse("Bench", args, VALUED, Set.of("small", "graph"));
        BenchOptions o = new BenchOptions();
        if (c.help) {
            o.help = true;
            return o;
        }
        c.noPositional();
        o.small = c.flag("small");
        o.graph = c.flag("graph");
        o.mode = c.get("mode", "throughput");
        if (!List.of("throughput", "longctx", "train", "stress", "all").contains(o.mode)) {
            throw new BadOptionException("--mode must be throughput, longctx, train, stress or all, got '" + o.mode + "'");
        }
        o.backend = c.backend();
        o.routing = Routing.parse(c.get("routing", "topk"));
        boolean small = o.small;
        o.batch = c.longValue("batch", small ? 2 : 64, 1, I32);
        o.seq = c.longValue("seq", small ? 512 : 4096, 1, MAX_SEQ);
        o.dim = (int) c.longValue("dim", small ? 256 : 2048, 1, I32);
        o.heads = (int) c.longValue("heads", small ? 4 : 16, 1, I32);
        o.kvHeads = (int) c.longValue("kv-heads", small ? 2 : 4, 1, I32);
        o.mlpRatio = (int) c.longValue("mlp-ratio", 4, 1, I32);
        o.iters = (int) c.longValue("iters", 10, 1, 1_000_000);
        o.warmup = (int) c.longValue("warmup", 2, 0, 1_000_000);
        o.threads = (int) c.longValue("threads", 0, 0, 4096);
        o.seed = c.longValue("seed", 1, 0, Long.MAX_VALUE);
        o.maxSeq = c.longValue("max-seq", small ? 16384 : 1L << 22, 1, MAX_SEQ);
        // the cap wins: one stress step
        o.stressStart = Math.min(c.longValue("stress-start", small ? 1024 : 65536, 1, MAX_SEQ), o.maxSeq);
        o.rho = c.doubleValue("rho", 0.2);
        if (!(o.rho > 0 && o.rho <= 1)) {
            throw new BadOptionException("--rho must be a number in (0, 1], got '" + c.get("rho", "") + "'");
        }
        o.longSeq = longSeq(c.get("long-seq", small ? "2048,4096" : "65536,131072"));
        o.json = c.get("json", null);
        return o;
    }

    private static List<Long> longSeq(String s) {
        List<Long> list = new ArrayList<>();
        for (String item : s.split(",", -1)) {
            try {
                long x = Long.parseLong(item.trim());
                if (x >= 1 && x <= MAX_SEQ) {
                    list.add(x);
                    continue;
                }
            } catch (NumberFormatException e) {
                // said below
            }
            throw new BadOptionException("--long-seq must be a comma-separated list of positive integers, got '" + s + "'");
        }
        return List.copyOf(list);
    }
}
