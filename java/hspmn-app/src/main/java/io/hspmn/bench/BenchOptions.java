package io.hspmn.bench;

import io.hspmn.Backend;
import io.hspmn.Routing;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
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

    private static final Set<String> TAKES_VALUE = Set.of("mode", "backend", "batch", "seq", "dim", "heads",
            "kv-heads", "mlp-ratio", "rho", "routing", "iters", "warmup", "threads", "seed", "long-seq",
            "stress-start", "max-seq", "json");
    private static final long I32 = Integer.MAX_VALUE;
    private static final long MAX_SEQ = 1L << 40;

    /** A command line that cannot run; the message says why. */
    static final class UsageException extends Exception {
        UsageException(String message) {
            super(message);
        }
    }

    String mode = "throughput";
    Backend backend = Backend.AUTO;
    long batch = 64;
    long seq = 4096;
    int dim = 2048;
    int heads = 16;
    int kvHeads = 4;
    int mlpRatio = 4;
    int threads = 0;
    double rho = 0.2;
    Routing routing = Routing.TOPK;
    int iters = 10;
    int warmup = 2;
    long seed = 1;
    List<Long> longSeq = List.of(65536L, 131072L);
    long stressStart = 65536;
    long maxSeq = 1L << 22;
    String json;
    boolean small;
    boolean graph;
    boolean help;

    static BenchOptions parse(String[] args) throws UsageException {
        BenchOptions o = new BenchOptions();
        Map<String, String> v = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("--help") || a.equals("-h")) {
                o.help = true;
                return o;
            }
            if (a.equals("--small")) {
                o.small = true;
                continue;
            }
            if (a.equals("--graph")) {
                o.graph = true;
                continue;
            }
            if (!a.startsWith("--")) {
                throw new UsageException("unexpected argument '" + a + "'");
            }
            String key = a.substring(2);
            String val;
            int eq = key.indexOf('=');
            if (eq >= 0) {
                val = key.substring(eq + 1);
                key = key.substring(0, eq);
            } else if (i + 1 < args.length) {
                val = args[++i];
            } else {
                throw new UsageException("option --" + key + " needs a value");
            }
            if (!TAKES_VALUE.contains(key)) {
                throw new UsageException("unknown option --" + key);
            }
            v.put(key, val);
        }
        if (o.small) {
            o.batch = 2;
            o.seq = 512;
            o.dim = 256;
            o.heads = 4;
            o.kvHeads = 2;
            o.longSeq = List.of(2048L, 4096L);
            o.stressStart = 1024;
            o.maxSeq = 16384;
        }
        if (v.containsKey("batch")) o.batch = integer(v, "batch", 1, I32);
        if (v.containsKey("seq")) o.seq = integer(v, "seq", 1, MAX_SEQ);
        if (v.containsKey("dim")) o.dim = (int) integer(v, "dim", 1, I32);
        if (v.containsKey("heads")) o.heads = (int) integer(v, "heads", 1, I32);
        if (v.containsKey("kv-heads")) o.kvHeads = (int) integer(v, "kv-heads", 1, I32);
        if (v.containsKey("mlp-ratio")) o.mlpRatio = (int) integer(v, "mlp-ratio", 1, I32);
        if (v.containsKey("iters")) o.iters = (int) integer(v, "iters", 1, 1_000_000);
        if (v.containsKey("warmup")) o.warmup = (int) integer(v, "warmup", 0, 1_000_000);
        if (v.containsKey("threads")) o.threads = (int) integer(v, "threads", 0, 4096);
        if (v.containsKey("seed")) o.seed = integer(v, "seed", 0, Long.MAX_VALUE);
        if (v.containsKey("stress-start")) o.stressStart = integer(v, "stress-start", 1, MAX_SEQ);
        if (v.containsKey("max-seq")) o.maxSeq = integer(v, "max-seq", 1, MAX_SEQ);
        if (v.containsKey("mode")) {
            o.mode = v.get("mode");
            if (!List.of("throughput", "longctx", "train", "stress", "all").contains(o.mode)) {
                throw new UsageException("--mode must be throughput, longctx, train, stress or all, got '" + o.mode + "'");
            }
        }
        if (v.containsKey("backend")) {
            String b = v.get("backend");
            if (!List.of("auto", "cpu", "cuda").contains(b)) {
                throw new UsageException("--backend must be auto, cpu or cuda, got '" + b + "'");
            }
            o.backend = Backend.parse(b);
        }
        if (v.containsKey("routing")) {
            String r = v.get("routing");
            if (!List.of("topk", "threshold").contains(r)) {
                throw new UsageException("--routing must be topk or threshold, got '" + r + "'");
            }
            o.routing = Routing.parse(r);
        }
        if (v.containsKey("rho")) {
            String s = v.get("rho");
            double r;
            try {
                r = Double.parseDouble(s);
            } catch (NumberFormatException e) {
                r = Double.NaN;
            }
            if (!(r > 0 && r <= 1)) {
                throw new UsageException("--rho must be a number in (0, 1], got '" + s + "'");
            }
            o.rho = r;
        }
        if (v.containsKey("long-seq")) {
            String s = v.get("long-seq");
            List<Long> list = new ArrayList<>();
            for (String item : s.split(",", -1)) {
                Long x = parseLong(item, 1, MAX_SEQ);
                if (x == null) {
                    throw new UsageException("--long-seq must be a comma-separated list of positive integers, got '" + s + "'");
                }
                list.add(x);
            }
            o.longSeq = List.copyOf(list);
        }
        o.json = v.get("json");
        o.stressStart = Math.min(o.stressStart, o.maxSeq); // the cap wins: one stress step
        return o;
    }

    private static long integer(Map<String, String> v, String name, long lo, long hi) throws UsageException {
        Long x = parseLong(v.get(name), lo, hi);
        if (x == null) {
            throw new UsageException("--" + name + " must be an integer in [" + lo + ", " + hi + "], got '" + v.get(name) + "'");
        }
        return x;
    }

    private static Long parseLong(String s, long lo, long hi) {
        try {
            long x = Long.parseLong(s);
            return x >= lo && x <= hi ? x : null;
        } catch (NumberFormatException e) {
            return null;
        }
    }
}
