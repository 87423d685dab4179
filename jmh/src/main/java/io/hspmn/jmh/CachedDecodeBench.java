package io.hspmn.jmh;

import io.hspmn.Backend;
import io.hspmn.Decoder;
import io.hspmn.StepArrays;
import io.hspmn.ffi.hspmn_h;
import java.lang.reflect.Field;
import io.hspmn.ContextOptions;
import io.hspmn.HspmnConfig;
import io.hspmn.LanguageModel;
import io.hspmn.ModelConfig;
import io.hspmn.NativeHandle;
import io.hspmn.Routing;
import io.hspmn.generate.CachedEngine;
import io.hspmn.generate.DecodeEngine;
import io.hspmn.generate.GenerationRequest;
import io.hspmn.generate.Generator;
import io.hspmn.generate.Models;
import io.hspmn.generate.SamplingParams;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * One decode step on the real native cached decoder (CPU backend, one thread, a small random byte-level
 * model: D=64, 2 layers), layer by layer of the Java side: {@code rawStep} is the bare downcall
 * {@code hspmn_decoder_step} (the next token sampled natively); {@code decoderStep} the same through
 * {@link Decoder#step} (argument checks, the context's guard, the status check); {@code engineStep}
 * through {@link CachedEngine#stepSampled} (slot ids, lengths); {@code generatorStep} the whole
 * {@link Generator#step()} (sampling parameters and draws, stop checks, publication). The differences are
 * what each Java layer adds to the native step; DecodeStepBench isolates the generator's share with a
 * null call, which these differences (of whole native steps, BENCHMARKS.md) cannot resolve below their error.
 *
 * <p>Steady state: the routers' bias is set to -30 so that no token is routed. Otherwise a routed token
 * attends over the whole cache, so a step's cost would depend on which tokens come (the generator feeds
 * sampled ones, the bare engine fixed ones) and grow with the length: the two benchmarks would measure
 * different native work. When the sequences reach the cache's length they start again (once per ~16k
 * steps).
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MICROSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "-Xmx2g"})
public class CachedDecodeBench {
    static final int MAX_LEN = 1 << 14;

    @Param({"1", "8"})
    public int batch;

    @Param({"greedy", "topk"})
    public String sampling;

    private CachedEngine engine;
    private Generator generator;
    private DecodeEngine.Sequence[] seqs;
    private MemorySegment ids;
    private MemorySegment prompt;
    private SamplingParams params;
    private LanguageModel lm;
    private Decoder decoder;        // a decoder of its own for rawStep and decoderStep
    private MemorySegment handle;   // its native handle
    private StepArrays arrays;
    private MemorySegment stepParams;
    private MemorySegment sampled;
    private int decoderLength;

    @Setup(Level.Trial)
    public void setUp() {
        ModelConfig cfg = ModelConfig.byteLevel(2, HspmnConfig.builder().dim(64).numHeads(4).numKvHeads(2)
                .routing(Routing.THRESHOLD).build());
        lm = Models.random(cfg, 1L, ContextOptions.defaults().withBackend(Backend.CPU).withNumThreads(1));
        for (int l = 0; l < cfg.numLayers(); l++) {
            // no token is ever routed, so a step costs the same whatever the tokens and the length (see above)
            lm.setParam("blocks." + l + ".router.b", new float[] {-30f});
        }
        // twice the batch: the engine's own sequences and the generator's (the decoder's are its own)
        engine = new CachedEngine(lm, 2 * batch, MAX_LEN, true);
        generator = new Generator(engine, batch);
        params = DecodeStepBench.params(sampling);
        Arena arena = Arena.ofAuto();
        prompt = arena.allocateFrom(ValueLayout.JAVA_INT, 72, 101, 108, 108, 111);
        ids = arena.allocate(4L * batch);
        for (int i = 0; i < batch; i++) {
            ids.setAtIndex(ValueLayout.JAVA_INT, i, 32 + i);
        }
        seqs = new DecodeEngine.Sequence[batch];
        restartEngineSequences();
        restartSessions();
        // the sampling of every row, with draws that move each step as a session's would
        stepParams = arena.allocate(StepArrays.PARAMS_BYTES * batch);
        sampled = arena.allocate(4L * batch);
        decoder = lm.decoder(batch, MAX_LEN);
        try {
            Field f = NativeHandle.class.getDeclaredField("handle"); // the decoder's, held by its base class
            f.setAccessible(true);
            handle = (MemorySegment) f.get(decoder);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(e);
        }
        arrays = new StepArrays(batch);
        for (int i = 0; i < batch; i++) {
            arrays.set(i, i, 32 + i).sampling(i, params.temperature(), params.topK(), params.topP(), i, 1);
            StepArrays.write(stepParams, StepArrays.PARAMS_BYTES * i, params.temperature(), params.topK(), params.topP(), i, 1);
        }
        restartDecoder();
    }

    private void restartDecoder() {
        for (int i = 0; i < batch; i++) {
            decoder.reset(i);
            decoder.append(i, 72, 101, 108, 108, 111);
        }
        decoderLength = 5;
    }

    private void restartEngineSequences() {
        for (int i = 0; i < batch; i++) {
            if (seqs[i] != null) {
                engine.release(seqs[i]);
            }
            seqs[i] = engine.prefill(prompt, 5).sequence();
        }
    }

    private void restartSessions() {
        int[] p = {72, 101, 108, 108, 111};
        for (int i = 0; i < batch; i++) {
            generator.start(GenerationRequest.of(p, params.withSeed(i), Integer.MAX_VALUE), null);
        }
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        generator.close();
        decoder.close();
        arrays.close();
        engine.close();
    }

    /** The bare downcall hspmn_decoder_step, arguments in place. */
    @Benchmark
    public int rawStep() {
        if (++decoderLength >= MAX_LEN) {
            restartDecoder();
        }
        int rc = hspmn_h.hspmn_decoder_step(handle, batch, arrays.slots(), arrays.tokens(), arrays.params(), arrays.next(),
                MemorySegment.NULL);
        if (rc != 0) {
            throw new IllegalStateException("hspmn_decoder_step: status " + rc);
        }
        return rc;
    }

    /** The same step through the Java API's Decoder.step. */
    @Benchmark
    public StepArrays decoderStep() {
        if (++decoderLength >= MAX_LEN) {
            restartDecoder();
        }
        decoder.step(arrays, batch);
        return arrays;
    }

    /** The same step through the engine (CachedEngine.stepSampled), as the generator calls it. */
    @Benchmark
    public MemorySegment engineStep() {
        if (seqs[0].length() >= MAX_LEN) {
            restartEngineSequences();
        }
        engine.stepSampled(seqs, batch, ids, stepParams, sampled, false);
        return sampled;
    }

    /** The same native step inside the whole generation loop. */
    @Benchmark
    public boolean generatorStep() {
        if (generator.active() == 0) {
            restartSessions(); // every session ended at the cache's length
        }
        return generator.step();
    }
}
