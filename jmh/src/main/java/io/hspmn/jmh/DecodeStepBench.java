package io.hspmn.jmh;

import io.hspmn.Hspmn;
import io.hspmn.StepArrays;
import io.hspmn.ffi.hspmn_h;
import io.hspmn.generate.DecodeEngine;
import io.hspmn.generate.ForwardReport;
import io.hspmn.generate.Generator;
import io.hspmn.generate.Sampler;
import io.hspmn.generate.SamplingParams;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.TearDown;

/**
 * The Java-side cost of one decode step around the native call: {@link Generator#step()} against the
 * engine call alone. The engine here is a stand-in whose step is one trivial FFM downcall
 * ({@code hspmn_abi_version}), so the difference of the two benchmarks is what the Java layer adds to a
 * real native step. Two paths ({@link #path}):
 * <ul>
 *   <li>{@code sampled}, what the cached engine does: the batch's next-token ids and each sequence's
 *       {@code hspmn_sampling_params} (with its draw of the random stream) into off-heap memory, the call,
 *       which samples natively and hands back fixed token ids, then stop checks and publication;</li>
 *   <li>{@code logits}, for engines that cannot sample: the call hands back fixed V=256 logits and the
 *       Java {@link Sampler} picks each token from them.</li>
 * </ul>
 * The goal: at most 1 us per step above the native call, for every sampler.
 *
 * <p>Pitfalls this class guards against: dead code (every benchmark returns a value); steady state
 * (sequences never finish during an iteration: max_new_tokens is effectively unbounded and a fresh batch
 * is set up per iteration, so no prefill or release is timed).
 */
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "-Xmx3g"})
public class DecodeStepBench extends DecodeBench {
    static final int VOCAB = 256;

    /** A DecodeEngine whose step is one FFM downcall and fixed logits: the "native call" being measured around. */
    static final class NullCallEngine implements DecodeEngine {
        static final class Seq implements Sequence {
            int length;

            @Override
            public int length() {
                return length;
            }
        }

        private final Arena arena = Arena.ofShared();
        private final MemorySegment logits;
        private final boolean samples;
        int sink;

        NullCallEngine(int maxBatch, boolean samples) {
            this.samples = samples;
            logits = arena.allocate(4L * VOCAB * maxBatch, 64);
            SplittableRandom r = new SplittableRandom(1);
            for (long i = 0; i < (long) VOCAB * maxBatch; i++) {
                logits.setAtIndex(ValueLayout.JAVA_FLOAT, i, (float) (r.nextGaussian() * 2));
            }
        }

        @Override
        public int vocabSize() {
            return VOCAB;
        }

        @Override
        public int numLayers() {
            return 1;
        }

        @Override
        public int maxLength() {
            return Integer.MAX_VALUE;
        }

        @Override
        public Sequence open() {
            return new Seq();
        }

        @Override
        public MemorySegment extend(Sequence sequence, MemorySegment ids, int count, boolean wantLogits) {
            ((Seq) sequence).length += count;
            return wantLogits ? logits.asSlice(0, 4L * VOCAB) : null;
        }

        @Override
        public MemorySegment step(Sequence[] sequences, int count, MemorySegment nextIds) {
            sink += hspmn_h.hspmn_abi_version();
            for (int i = 0; i < count; i++) {
                ((Seq) sequences[i]).length++;
            }
            return logits;
        }

        @Override
        public boolean samplesTokens() {
            return samples;
        }

        /** One downcall standing for hspmn_decoder_step; the "sampled" tokens are fixed. */
        @Override
        public MemorySegment stepSampled(Sequence[] sequences, int count, MemorySegment nextIds, MemorySegment params,
                                         MemorySegment sampled, boolean wantLogits) {
            sink += hspmn_h.hspmn_abi_version();
            for (int i = 0; i < count; i++) {
                ((Seq) sequences[i]).length++;
                sampled.setAtIndex(ValueLayout.JAVA_INT, i, 65 + i);
            }
            return wantLogits ? logits : null;
        }

        @Override
        public void release(Sequence sequence) {
        }

        @Override
        public ForwardReport forwardReport(MemorySegment ids, int count) {
            throw new UnsupportedOperationException();
        }

        @Override
        public void close() {
            arena.close();
        }
    }

    /** greedy; temp = temperature 0.8; topk = temperature 0.8 + top-k 40; topp = temperature 0.8 + top-p 0.9. */
    @Param({"greedy", "temp", "topk", "topp"})
    public String sampling;

    /** sampled: the engine samples (the cached engine's path); logits: the Java Sampler reads logits. */
    @Param({"sampled", "logits"})
    public String path;

    private NullCallEngine engine;
    private MemorySegment params;
    private MemorySegment sampled;
    private Sampler sampler;

    @Setup(Level.Iteration)
    public void setUp() {
        Hspmn.abiVersion(); // loads the library (NativeLibrary.ensureLoaded) outside the measurement
        engine = new NullCallEngine(batch, path.equals("sampled"));
        generator = new Generator(engine, batch);
        SamplingParams p = params(sampling);
        startSessions(new int[] {1, 2, 3}, p);
        seqs = new DecodeEngine.Sequence[batch];
        for (int i = 0; i < batch; i++) {
            seqs[i] = engine.prefill(MemorySegment.NULL, 1).sequence();
        }
        ids = Arena.ofAuto().allocate(4L * batch);
        params = Arena.ofAuto().allocate(StepArrays.PARAMS_BYTES * batch);
        sampled = Arena.ofAuto().allocate(4L * batch);
        sampler = new Sampler(p, VOCAB);
    }

    @TearDown(Level.Iteration)
    public void tearDown() {
        generator.close();
        engine.close();
    }

    /** The baseline: the engine call alone (one downcall) with the batch's ids (and params) already in place. */
    @Benchmark
    public MemorySegment engineCallOnly() {
        return engine.samples ? engine.stepSampled(seqs, batch, ids, params, sampled, false) : engine.step(seqs, batch, ids);
    }

    /** One whole decode step of the batch: what a caller of the generation API pays per token per batch. */
    @Benchmark
    public boolean generatorStep() {
        return generator.step();
    }

    /** One sample from a V=256 row: the sampler's share of the step (per sequence). */
    @Benchmark
    public int samplerOnly() {
        return sampler.sample(engine.logits, 0);
    }
}
