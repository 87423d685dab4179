package io.hspmn;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The parity check must be able to fail: for every case and every parameter, a perturbation of about 1%
 * of the parameter's RMS (scalars: 0.01 absolute) must make {@link Parity#run} report a mismatch.
 * Otherwise a parameter could be ignored, mis-named or mis-shaped on the native side and the parity
 * test would still pass.
 */
class GoldenSensitivityTest {
    @ParameterizedTest(name = "{0}")
    @MethodSource("io.hspmn.GoldenCase#files")
    void everyParameterIsObserved(Path file) {
        GoldenCase gc = GoldenCase.load(file);
        try {
            List<String> unnoticed = new ArrayList<>();
            SplittableRandom rnd = new SplittableRandom(7);
            for (String p : gc.parameterNames()) {
                float[] v = gc.floats(p).clone();
                perturb(v, rnd);
                Parity.Report r = Parity.run(gc, Backend.CPU, Parity.Tolerances.cpu(), Map.of(p, v));
                if (p.equals("router.log_temp") && gc.temperatureClamped()) {
                    // exp(log_temp) is clamped to [0.1, 2]: a 0.01 nudge that stays outside the range changes
                    // nothing, and its gradient is 0 by definition (native/README.md). The check must pass.
                    assertTrue(r.passed(), () -> gc.name + ": nudging a clamped log_temp changed results: " + r.failures());
                    continue;
                }
                if (r.passed()) {
                    unnoticed.add(p);
                } else {
                    System.out.println(gc.name + " " + p + " perturbed -> " + r.failures().size() + " checks fail, e.g. "
                            + r.failures().get(0));
                }
            }
            if (!unnoticed.isEmpty()) {
                fail(gc.name + ": perturbing " + unnoticed + " by 1% of RMS went unnoticed by the parity check");
            }
        } finally {
            gc.file.close();
        }
    }

    /** Adds +-1% of the RMS to every element (random signs); a scalar gets +-0.01. Survives bf16 rounding. */
    static void perturb(float[] v, SplittableRandom rnd) {
        double ss = 0;
        for (float f : v) {
            ss += (double) f * f;
        }
        double step = v.length == 1 ? 0.01 : 0.01 * Math.sqrt(ss / v.length);
        boolean changed = false;
        for (int i = 0; i < v.length; i++) {
            float before = BFloat16.round(v[i]);
            v[i] = BFloat16.round((float) (v[i] + (rnd.nextBoolean() ? step : -step)));
            changed |= v[i] != before;
        }
        assertFalse(!changed, "perturbation vanished in bf16 rounding");
    }
}
