package io.hspmn.train;

import io.hspmn.Backend;
import io.hspmn.Communicator;
import io.hspmn.train.TrainOptions.Option;
import io.hspmn.train.TrainOptions.Scope;

import java.nio.file.Path;
import java.util.List;
import java.util.Locale;

/**
 * The data-parallel options of a training run (README "Training on several GPUs"): how many ranks, which
 * communicator, the multi-host rendezvous. Their rows of {@link TrainOptions#OPTIONS} live here so the
 * option table's other regions stay as they were.
 *
 * @param gpus           ranks of this process (one thread and context each; on CUDA, device = local rank)
 * @param nodes          processes (hosts) of the run, each with {@code gpus} ranks
 * @param nodeRank       this process's index in [0, nodes)
 * @param comm           auto, local or nccl
 * @param commIdFile     where node 0 writes the rendezvous id and the others read it (several nodes)
 * @param commTimeoutS   how long a rank waits for the others (rendezvous, every collective) before failing
 * @param shardOptimizer ZeRO-1: each rank keeps the AdamW moments of its share of the parameters
 * @param bucketMib      gradient all-reduce bucket size in MiB (0: the library's default)
 */
public record ParallelOptions(int gpus, int nodes, int nodeRank, String comm, Path commIdFile, int commTimeoutS,
                              boolean shardOptimizer, int bucketMib) {
    /** Environment variable holding the rendezvous id as hex, instead of --comm-id-file. */
    public static final String COMM_ID_ENV = "HSPMN_COMM_ID";

    /** The ranks of the whole run: nodes x gpus. */
    public int world() {
        return Math.multiplyExact(nodes, gpus);
    }

    /** The global rank of this process's local rank {@code local}. */
    public int globalRank(int local) {
        return nodeRank * gpus + local;
    }

    /**
     * The communicator for a run on {@code backend} (resolved, not AUTO), or null for none: a run of one
     * rank with --comm auto trains without one, exactly as before data parallelism existed.
     *
     * @throws IllegalArgumentException a kind that cannot serve this run, saying why
     */
    public Communicator.Kind commKind(Backend backend) {
        boolean cuda = backend == Backend.CUDA;
        Communicator.Kind kind = switch (comm) {
            case "auto" -> world() == 1 ? null
                    : cuda && (nodes > 1 || Communicator.available(Communicator.Kind.NCCL)) ? Communicator.Kind.NCCL
                    : Communicator.Kind.LOCAL;
            case "local" -> Communicator.Kind.LOCAL;
            default -> Communicator.Kind.NCCL;
        };
        if (kind == Communicator.Kind.LOCAL && nodes > 1) {
            throw new IllegalArgumentException("--nodes " + nodes + " needs --comm nccl: the local communicator joins "
                    + "threads of one process");
        }
        if (kind == Communicator.Kind.NCCL) {
            if (!cuda) {
                throw new IllegalArgumentException("--comm nccl needs --backend cuda (this run is on " + backend
                        + "); --comm local joins CPU ranks");
            }
            String why = Communicator.unavailableReason(Communicator.Kind.NCCL);
            if (!why.isEmpty()) {
                throw new IllegalArgumentException("--comm nccl: NCCL is not available here: " + why
                        + (nodes > 1 ? "" : "; --comm local joins the GPUs of one host without it"));
            }
        }
        return kind;
    }

    /** Checks the values and how they go together, naming the option. */
    void validate(int batch, int seqLen) {
        TrainOptions.atLeast("gpus", gpus, 1);
        TrainOptions.atLeast("nodes", nodes, 1);
        TrainOptions.atLeast("node-rank", nodeRank, 0);
        TrainOptions.atLeast("comm-timeout", commTimeoutS, 1);
        TrainOptions.atLeast("bucket-mib", bucketMib, 0);
        if (nodeRank >= nodes) {
            throw new IllegalArgumentException("--node-rank (" + nodeRank + ") must be below --nodes (" + nodes
                    + "): nodes are numbered 0 to " + (nodes - 1));
        }
        if (nodes > 1 && comm.equals("local")) {
            throw new IllegalArgumentException("--nodes " + nodes + " needs --comm nccl (or auto): the local communicator "
                    + "joins threads of one process");
        }
        if ((long) nodes * gpus > 1 << 16) {
            throw new IllegalArgumentException("--nodes x --gpus (" + nodes + " x " + gpus + ") is too many ranks");
        }
        if ((long) world() * batch * (seqLen + 1) > Integer.MAX_VALUE / 8) {
            throw new IllegalArgumentException("the global batch x --seq-len (" + world() + " x " + batch + " x " + seqLen
                    + ") is too large");
        }
        if ((long) commTimeoutS * 1000 > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("--comm-timeout (" + commTimeoutS + " s) is too long");
        }
    }

    private static String comm(String v) {
        String c = v.trim().toLowerCase(Locale.ROOT);
        if (!c.equals("auto") && !c.equals("local") && !c.equals("nccl")) {
            throw new IllegalArgumentException("--comm: '" + v + "' is not auto, local or nccl");
        }
        return c;
    }

    /** The rows of the option table; {@link TrainOptions#OPTIONS} ends with them. */
    static final List<Option> OPTIONS = List.of(
            new Option("gpus", "N", "ranks on this host, one thread, context and model replica each (CUDA: devices 0..N-1; "
                    + "CPU: N CPU ranks); --batch is per rank, so the global batch is N x --nodes x --batch; a resumed run "
                    + "keeps the global batch and splits it over the new ranks", Scope.ADJUSTABLE,
                    (b, v) -> b.parallel().gpus = TrainOptions.i("gpus", v), o -> Integer.toString(o.parallel().gpus())),
            new Option("comm", "auto|local|nccl", "how ranks average gradients: nccl (CUDA), local (threads of this "
                    + "process, any backend); auto: none for one rank, nccl on CUDA when present, else local",
                    Scope.SESSION, (b, v) -> b.parallel().comm = comm(v), o -> o.parallel().comm()),
            new Option("shard-optimizer", null, "ZeRO-1: each rank keeps AdamW's moments for its share of the parameters "
                    + "only (same results, less memory per rank)", Scope.ADJUSTABLE,
                    (b, v) -> b.parallel().shardOptimizer = Boolean.parseBoolean(v),
                    o -> Boolean.toString(o.parallel().shardOptimizer())),
            new Option("bucket-mib", "M", "gradient all-reduce bucket size in MiB (0: the library's default)",
                    Scope.SESSION, (b, v) -> b.parallel().bucketMib = TrainOptions.i("bucket-mib", v),
                    o -> Integer.toString(o.parallel().bucketMib())),
            new Option("nodes", "M", "hosts of a multi-host run (NCCL), each running hspmn train with the same options",
                    Scope.ADJUSTABLE, (b, v) -> b.parallel().nodes = TrainOptions.i("nodes", v), o -> Integer.toString(o.parallel().nodes())),
            new Option("node-rank", "R", "this host's index in [0, --nodes); its ranks are R x --gpus + 0..gpus-1, and "
                    + "global rank 0 (node 0) alone writes --out", Scope.SESSION,
                    (b, v) -> b.parallel().nodeRank = TrainOptions.i("node-rank", v), o -> Integer.toString(o.parallel().nodeRank())),
            new Option("comm-id-file", "PATH", "several nodes: node 0 writes the rendezvous id here (atomically), the "
                    + "others wait for it (up to --comm-timeout); or set " + COMM_ID_ENV + " (hex) on every node",
                    Scope.SESSION, (b, v) -> b.parallel().commIdFile = Path.of(v),
                    o -> o.parallel().commIdFile() == null ? null : o.parallel().commIdFile().toString()),
            new Option("comm-timeout", "SECONDS", "a rank that waits this long for the others (rendezvous or a collective) "
                    + "fails, and with it every rank", Scope.SESSION, (b, v) -> b.parallel().commTimeoutS = TrainOptions.i("comm-timeout", v),
                    o -> Integer.toString(o.parallel().commTimeoutS())));

    /** Mutable, inside {@link TrainOptions.Builder}; starts at the defaults (one rank, no communicator). */
    public static final class Builder {
        int gpus = 1;
        int nodes = 1;
        int nodeRank;
        String comm = "auto";
        Path commIdFile;
        int commTimeoutS = 120;
        boolean shardOptimizer;
        int bucketMib;

        public Builder gpus(int v) { gpus = v; return this; }
        public Builder nodes(int v) { nodes = v; return this; }
        public Builder nodeRank(int v) { nodeRank = v; return this; }
        public Builder comm(String v) { comm = ParallelOptions.comm(v); return this; }
        public Builder commIdFile(Path v) { commIdFile = v; return this; }
        public Builder commTimeoutS(int v) { commTimeoutS = v; return this; }
        public Builder shardOptimizer(boolean v) { shardOptimizer = v; return this; }
        public Builder bucketMib(int v) { bucketMib = v; return this; }

        ParallelOptions build() {
            return new ParallelOptions(gpus, nodes, nodeRank, comm, commIdFile, commTimeoutS, shardOptimizer, bucketMib);
        }
    }
}
