package io.hspmn.jmh;

import io.hspmn.Hspmn;
import io.hspmn.ffi.hspmn_h;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;

/**
 * What one call across the FFM boundary costs: the trivial entry point {@code hspmn_abi_version}
 * through the generated binding, against a plain Java field read that returns the same value.
 * The pitfall this class guards against (JMH sample 08, dead code): each method returns its value
 * so the JIT cannot drop the call.
 */
@State(Scope.Benchmark)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
public class FfmCallBench extends NativeBench {

    private int cached;

    @Setup
    public void load() {
        cached = Hspmn.abiVersion(); // loads the library once, outside the measurement
    }

    /** The baseline: the same answer without leaving Java. */
    @Benchmark
    public int javaField() {
        return cached;
    }

    /** A downcall through the generated jextract-style binding. */
    @Benchmark
    public int downcallAbiVersion() {
        return hspmn_h.hspmn_abi_version();
    }
}
