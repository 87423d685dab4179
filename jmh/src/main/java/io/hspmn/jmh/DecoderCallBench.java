package io.hspmn.jmh;

import io.hspmn.Backend;
import io.hspmn.Context;
import io.hspmn.ContextOptions;
import io.hspmn.Decoder;
import io.hspmn.HspmnConfig;
import io.hspmn.LanguageModel;
import io.hspmn.ModelConfig;
import io.hspmn.NativeHandle;
import io.hspmn.Routing;
import io.hspmn.ffi.hspmn_h;
import io.hspmn.generate.Models;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.reflect.Field;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;
import org.openjdk.jmh.annotations.Warmup;

/**
 * What the Java API's wrapper around a decoder downcall costs, on a call whose native work is trivial
 * ({@code hspmn_decoder_length}): the bare downcall against {@link Decoder#length}, which wraps it the way
 * {@link Decoder#step} wraps {@code hspmn_decoder_step} (the context's one-thread guard, the handle check,
 * the status check; step adds four size checks of its arrays). CachedDecodeBench cannot resolve this
 * difference under the cost of a real step (BENCHMARKS.md); this one can.
 */
@State(Scope.Thread)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "-Xmx1g"})
public class DecoderCallBench {
    private LanguageModel lm;
    private Decoder decoder;
    private MemorySegment handle;
    private MemorySegment out;

    @Setup(Level.Trial)
    public void setUp() throws ReflectiveOperationException {
        ModelConfig cfg = ModelConfig.byteLevel(1, HspmnConfig.builder().dim(32).numHeads(2).numKvHeads(1)
                .routing(Routing.THRESHOLD).build());
        lm = Models.random(cfg, 1L, ContextOptions.defaults().withBackend(Backend.CPU).withNumThreads(1));
        decoder = lm.decoder(2, 16);
        decoder.append(1, 5, 6, 7);
        Field f = NativeHandle.class.getDeclaredField("handle"); // the decoder's, held by its base class
        f.setAccessible(true);
        handle = (MemorySegment) f.get(decoder);
        out = Arena.ofAuto().allocate(8);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        decoder.close();
        Context ctx = lm.context();
        lm.close();
        ctx.close();
    }

    /** The bare downcall. */
    @Benchmark
    public long rawLength() {
        int rc = hspmn_h.hspmn_decoder_length(handle, 1, out);
        return rc == 0 ? out.get(ValueLayout.JAVA_LONG, 0) : -rc;
    }

    /** The same through the Java API. */
    @Benchmark
    public long apiLength() {
        return decoder.length(1);
    }
}
