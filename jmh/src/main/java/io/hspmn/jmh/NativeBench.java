package io.hspmn.jmh;

import io.hspmn.Backend;
import io.hspmn.ContextOptions;
import io.hspmn.HspmnConfig;
import io.hspmn.LanguageModel;
import io.hspmn.ModelConfig;
import io.hspmn.NativeHandle;
import io.hspmn.Routing;
import io.hspmn.generate.Models;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.Warmup;

import java.lang.foreign.MemorySegment;
import java.lang.reflect.Field;

/**
 * The run settings every benchmark here shares (JMH's annotations are inherited): average time per call,
 * 3 warm-up and 5 measured iterations of one second, one fork allowed to call native code. A benchmark adds its
 * {@code @State} scope and {@code @OutputTimeUnit}, and its own {@code @Fork} (a heap cap) or iterations where
 * they differ.
 */
@BenchmarkMode(Mode.AverageTime)
@Warmup(iterations = 3, time = 1)
@Measurement(iterations = 5, time = 1)
@Fork(value = 1, jvmArgsAppend = "--enable-native-access=ALL-UNNAMED")
public abstract class NativeBench {
    /** A byte-level model of random weights, threshold (causal) routing, in a CPU context of one thread of its own. */
    static LanguageModel randomCpuModel(int layers, int dim, int heads, int kvHeads) {
        ModelConfig cfg = ModelConfig.byteLevel(layers, HspmnConfig.builder().dim(dim).numHeads(heads).numKvHeads(kvHeads)
                .routing(Routing.THRESHOLD).build());
        return Models.random(cfg, 1L, ContextOptions.defaults().withBackend(Backend.CPU).withNumThreads(1));
    }

    /**
     * The native handle of {@code object}, for a benchmark that times the bare downcall against the Java API's
     * wrapper of it (the handle is private to {@link NativeHandle}: read by reflection, once, in set-up).
     */
    static MemorySegment nativeHandle(NativeHandle object) {
        try {
            Field f = NativeHandle.class.getDeclaredField("handle");
            f.setAccessible(true);
            return (MemorySegment) f.get(object);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(e);
        }
    }
}
