package io.hspmn.jmh;

import io.hspmn.Decoder;
import io.hspmn.LanguageModel;
import io.hspmn.ffi.hspmn_h;
import io.hspmn.generate.Models;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * What the Java API's wrapper around a decoder downcall costs, on a call whose native work is trivial
 * ({@code hspmn_decoder_length}): the bare downcall against {@link Decoder#length}, which wraps it the way
 * {@link Decoder#step} wraps {@code hspmn_decoder_step} (the context's one-thread guard, the handle check,
 * the status check; step adds four size checks of its arrays). CachedDecodeBench cannot resolve this
 * difference under the cost of a real step (BENCHMARKS.md); this one can.
 */
@State(Scope.Thread)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Fork(value = 1, jvmArgsAppend = {"--enable-native-access=ALL-UNNAMED", "-Xmx1g"})
public class DecoderCallBench extends NativeBench {
    private LanguageModel lm;
    private Decoder decoder;
    private MemorySegment handle;
    private MemorySegment out;

    @Setup(Level.Trial)
    public void setUp() {
        lm = randomCpuModel(1, 32, 2, 1);
        decoder = lm.decoder(2, 16);
        decoder.append(1, 5, 6, 7);
        handle = nativeHandle(decoder);
        out = Arena.ofAuto().allocate(8);
    }

    @TearDown(Level.Trial)
    public void tearDown() {
        decoder.close();
        Models.closeWithContext(lm);
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
