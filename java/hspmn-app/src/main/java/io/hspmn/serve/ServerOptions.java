package io.hspmn.serve;

import io.hspmn.Backend;
import io.hspmn.args.BadOptionException;
import io.hspmn.args.CommandLine;
import io.hspmn.HspmnConfig;
import io.hspmn.Routing;
import io.hspmn.ModelConfig;
import io.hspmn.generate.Generator;
import io.hspmn.generate.Models;

import java.nio.file.Path;
import java.util.Locale;
import java.util.Set;

/**
 * What the server runs and its limits; {@link #parse} reads them from the command line.
 *
 * @param host                bind address (loopback by default: expose it on purpose, behind a proxy)
 * @param port                0 picks a free port
 * @param checkpoint          a checkpoint file, or a directory of them (the newest *.safetensors), or null
 * @param randomModel         the model for --random (seeded, untrained: for demos and tests)
 * @param seed                seed of the random model
 * @param engine              how logits are computed: cached (K/V cache, threshold routing), recompute, auto
 * @param backend             cpu, cuda or auto
 * @param threads             CPU worker threads of the native context (0: all cores)
 * @param maxBodyBytes        largest request body; larger is 413
 * @param maxPromptTokens     longest prompt (and longest text to score), tokens = UTF-8 bytes
 * @param maxNewTokens        largest max_new_tokens a request may ask for
 * @param defaultNewTokens    max_new_tokens when a request does not say
 * @param maxConcurrent       generate and score requests served at once; more is 429
 * @param maxBatch            sequences decoded together
 * @param prefillChunk        the most prompt tokens prefilled between two decode steps (Engine.Options)
 * @param bodyTimeoutMillis   the most a request body may take to arrive once its headers are in; a slower
 *                            client's connection is closed (the body is read before the request takes one
 *                            of the {@code maxConcurrent} permits, so slow clients never hold one)
 */
public record ServerOptions(String host, int port, Path checkpoint, ModelConfig randomModel, long seed,
                            Models.EngineKind engine, Backend backend,
                            int threads, int maxBodyBytes, int maxPromptTokens, int maxNewTokens, int defaultNewTokens,
                            int maxConcurrent, int maxBatch, int prefillChunk, int bodyTimeoutMillis) {
    /** The default of {@code --body-timeout-ms}. */
    public static final int DEFAULT_BODY_TIMEOUT_MILLIS = 10_000;

    public ServerOptions {
        if (port < 0 || port > 65535) {
            throw new IllegalArgumentException("--port must be in [0, 65535], got " + port);
        }
        if ((checkpoint == null) == (randomModel == null)) {
            throw new IllegalArgumentException("give exactly one of --ckpt PATH and --random");
        }
        positive("--max-body-bytes", maxBodyBytes);
        positive("--max-prompt-tokens", maxPromptTokens);
        positive("--max-new-tokens", maxNewTokens);
        positive("--max-concurrent", maxConcurrent);
        positive("--max-batch", maxBatch);
        positive("--prefill-chunk", prefillChunk);
        if (defaultNewTokens < 1 || defaultNewTokens > maxNewTokens) {
            throw new IllegalArgumentException("--default-new-tokens must be in [1, --max-new-tokens], got " + defaultNewTokens);
        }
        java.util.Objects.requireNonNull(engine, "engine");
        java.util.Objects.requireNonNull(backend, "backend");
        if (threads < 0) {
            throw new IllegalArgumentException("--threads must be >= 0, got " + threads);
        }
        positive("--body-timeout-ms", bodyTimeoutMillis);
    }

    /** With the default prefill chunk and body timeout. */
    public ServerOptions(String host, int port, Path checkpoint, ModelConfig randomModel, long seed,
                         Models.EngineKind engine, Backend backend, int threads, int maxBodyBytes, int maxPromptTokens,
                         int maxNewTokens, int defaultNewTokens, int maxConcurrent, int maxBatch) {
        this(host, port, checkpoint, randomModel, seed, engine, backend, threads, maxBodyBytes, maxPromptTokens,
                maxNewTokens, defaultNewTokens, maxConcurrent, maxBatch, Generator.DEFAULT_PREFILL_CHUNK,
                DEFAULT_BODY_TIMEOUT_MILLIS);
    }

    private static void positive(String name, int v) {
        if (v < 1) {
            throw new IllegalArgumentException(name + " must be >= 1, got " + v);
        }
    }

    /** The random demo model: byte-level, 2 layers of D=64, causal (threshold) routing. */
    public static ModelConfig defaultRandomModel() {
        return new ModelConfig(256, 2, HspmnConfig.builder().dim(64).numHeads(4).numKvHeads(2).mlpRatio(4)
                .routing(Routing.THRESHOLD).build());
    }

    /** A random-model server with the default limits, on 127.0.0.1 and a free port. */
    public static ServerOptions randomDefaults() {
        return new ServerOptions("127.0.0.1", 0, null, defaultRandomModel(), 0L, Models.EngineKind.AUTO, Backend.AUTO, 0,
                64 * 1024, 1024, 512, 64, 16, 8);
    }

    /** The longest sequence the engine must hold. */
    public int maxContext() {
        return maxPromptTokens + maxNewTokens;
    }

    public ServerOptions withLimits(int maxBodyBytes, int maxPromptTokens, int maxNewTokens, int maxConcurrent, int maxBatch) {
        return new ServerOptions(host, port, checkpoint, randomModel, seed, engine, backend, threads, maxBodyBytes,
                maxPromptTokens, maxNewTokens, Math.min(defaultNewTokens, maxNewTokens), maxConcurrent, maxBatch,
                prefillChunk, bodyTimeoutMillis);
    }

    public ServerOptions withRandomModel(ModelConfig config, long seed, Backend backend, int threads) {
        return new ServerOptions(host, port, null, config, seed, engine, backend, threads, maxBodyBytes, maxPromptTokens,
                maxNewTokens, defaultNewTokens, maxConcurrent, maxBatch, prefillChunk, bodyTimeoutMillis);
    }

    public ServerOptions withEngine(Models.EngineKind kind) {
        return new ServerOptions(host, port, checkpoint, randomModel, seed, kind, backend, threads, maxBodyBytes,
                maxPromptTokens, maxNewTokens, defaultNewTokens, maxConcurrent, maxBatch, prefillChunk, bodyTimeoutMillis);
    }

    public ServerOptions withBodyTimeout(int millis) {
        return new ServerOptions(host, port, checkpoint, randomModel, seed, engine, backend, threads, maxBodyBytes,
                maxPromptTokens, maxNewTokens, defaultNewTokens, maxConcurrent, maxBatch, prefillChunk, millis);
    }

    /** The options' help text. */
    public static String usage() {
        return USAGE;
    }

    static final String USAGE = """
            usage: hspmn serve (--ckpt PATH | --random) [options]

            An HTTP service for an HSPMN language model (byte-level: a token is a UTF-8 byte).
              POST /v1/generate  {"prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "stop"}
                                 -> server-sent events: "token" per token, then "done" with stats
              POST /v1/score     {"text"} -> per-token log-likelihood and per-layer routing
              GET  /health       GET /metrics (Prometheus text)

            model:
              --ckpt PATH            a checkpoint written by `hspmn train` (its --out folder or the file)
              --random               an untrained random model, for demos
              --vocab N --layers N --dim N --heads N --kv-heads N --mlp-ratio N --routing threshold|topk
                                     the random model's shape (256, 2, 64, 4, 2, 4, threshold)
              --seed N               the random model's seed (0)
              --engine auto|cached|recompute  (auto: cached for threshold routing, which decodes with a
                                     K/V cache; recompute reruns the whole prefix per token, for topk)
              --backend cpu|cuda|auto  (auto)        --threads N   CPU threads, 0 = all cores (0)
            network:
              --host ADDR            bind address (127.0.0.1)      --port N   0 = any free port (8080)
            limits:
              --max-body-bytes N     (65536)   larger bodies get 413
              --max-prompt-tokens N  (1024)    longer prompts and texts get 400
              --max-new-tokens N     (512)     the most a request may ask for
              --default-new-tokens N (64)      when a request does not say
              --max-concurrent N     (16)      generate + score requests at once; more get 429
              --max-batch N          (8)       sequences decoded together
              --prefill-chunk N      (2048)    prompt tokens prefilled between two decode steps: a long
                                               prompt holds the running streams up by one chunk per token
              --body-timeout-ms N    (10000)   a request body must arrive within this once its headers
                                               have; a slower client is disconnected. Bodies are read before
                                               a request counts against --max-concurrent, so slow clients
                                               hold none
              --help
            """;

    private static final Set<String> VALUED = Set.of("host", "port", "ckpt", "vocab", "layers", "dim", "heads", "kv-heads",
            "mlp-ratio", "routing", "seed", "backend", "engine", "threads", "max-body-bytes", "max-prompt-tokens",
            "max-new-tokens", "default-new-tokens", "max-concurrent", "max-batch", "prefill-chunk", "body-timeout-ms");

    /**
     * Parses command-line options ({@code --name value} or {@code --name=value}) over {@link #randomDefaults()}
     * and {@link #defaultRandomModel()} (port 8080); null when they ask for help.
     */
    public static ServerOptions parse(String[] args) {
        CommandLine c = CommandLine.parse("serve", args, VALUED, Set.of("random"));
        if (c.help) {
            return null;
        }
        c.noPositional();
        Path ckpt = c.path("ckpt");
        if (c.flag("random") && ckpt != null) {
            throw new BadOptionException("give --ckpt PATH or --random, not both");
        }
        ModelConfig config = c.flag("random") ? randomModel(c) : null;
        ServerOptions d = randomDefaults();
        int maxNew = c.intValue("max-new-tokens", d.maxNewTokens);
        return new ServerOptions(c.get("host", d.host), c.intValue("port", 8080), ckpt, config,
                c.longValue("seed", d.seed, Long.MIN_VALUE, Long.MAX_VALUE), Models.EngineKind.parse(c.get("engine", "auto")),
                c.backend(), c.intValue("threads", d.threads), c.intValue("max-body-bytes", d.maxBodyBytes),
                c.intValue("max-prompt-tokens", d.maxPromptTokens), maxNew,
                Math.min(c.intValue("default-new-tokens", d.defaultNewTokens), maxNew), c.intValue("max-concurrent",
                d.maxConcurrent), c.intValue("max-batch", d.maxBatch), c.intValue("prefill-chunk", d.prefillChunk),
                c.intValue("body-timeout-ms", d.bodyTimeoutMillis));
    }

    /** --random's model: {@link #defaultRandomModel()} with the shape options given. */
    private static ModelConfig randomModel(CommandLine c) {
        ModelConfig d = defaultRandomModel();
        HspmnConfig b = d.block();
        try {
            return new ModelConfig(c.intValue("vocab", d.vocabSize()), c.intValue("layers", d.numLayers()),
                    HspmnConfig.builder().dim(c.intValue("dim", b.dim())).numHeads(c.intValue("heads", b.numHeads()))
                            .numKvHeads(c.intValue("kv-heads", b.numKvHeads())).mlpRatio(c.intValue("mlp-ratio", b.mlpRatio()))
                            .routing(Routing.parse(c.get("routing", b.routing().jsonName()))).build()).validate();
        } catch (io.hspmn.InvalidArgumentException e) {
            throw new BadOptionException("the random model's shape: " + e.getMessage());
        }
    }

    @Override
    public String toString() {
        return String.format(Locale.ROOT, "host=%s port=%d model=%s engine=%s backend=%s body<=%dB prompt<=%d new<=%d "
                        + "concurrent<=%d batch<=%d prefill-chunk=%d body-timeout=%dms",
                host, port, checkpoint != null ? checkpoint : "random(seed " + seed + ")",
                engine.name().toLowerCase(Locale.ROOT), backend, maxBodyBytes,
                maxPromptTokens, maxNewTokens, maxConcurrent, maxBatch, prefillChunk, bodyTimeoutMillis);
    }
}
