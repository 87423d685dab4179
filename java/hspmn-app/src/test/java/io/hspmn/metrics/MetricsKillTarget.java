package io.hspmn.metrics;

import java.nio.file.Path;

/** Run by {@link MetricsWriterTest} in a child JVM that it kills: writes steps until killed, saying each one on stdout. */
public final class MetricsKillTarget {
    public static void main(String[] args) throws Exception {
        try (MetricsWriter w = MetricsWriter.create(Path.of(args[0]))) {
            for (long step = 1; ; step++) {
                double[] routed = new double[16]; // long lines, so a write is not trivially small
                java.util.Arrays.fill(routed, 0.123456789 * step);
                w.write(new StepMetrics(step, 1.0 / step, 0.01, 1.4426950408889634 / step, routed, 3e-4, 1.0, 1e5, step, null, null));
                System.out.println(step);
                System.out.flush();
            }
        }
    }
}
