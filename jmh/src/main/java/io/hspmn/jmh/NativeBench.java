package io.hspmn.jmh;

import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.Warmup;

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
}
