package io.hspmn;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Every golden case (native/reference/make_goldens.py) on the CPU backend: generator noise, routing
 * (indices and counts exactly), forward with its own and with pinned routing, backward (d_x and every
 * parameter gradient). Tolerances and why: {@link Parity.Tolerances#cpu()}.
 */
class GoldenParityTest {
    private static final StringBuilder TABLE = new StringBuilder();

    @ParameterizedTest(name = "{0}")
    @MethodSource("io.hspmn.GoldenCase#files")
    void matchesReference(Path file) {
        GoldenCase gc = GoldenCase.load(file);
        try {
            Parity.Report r = Parity.run(gc, Backend.CPU, Parity.Tolerances.cpu());
            String table = r.table();
            synchronized (TABLE) {
                TABLE.append(table);
            }
            System.out.print(table);
            assertTrue(r.passed(), () -> gc.name + " (" + gc.description + ") differs from the reference:\n  "
                    + String.join("\n  ", r.failures()) + "\n" + table);
        } finally {
            gc.file.close();
        }
    }

    /** Keeps the whole error table where a report can quote it. */
    @AfterAll
    static void writeTable() throws IOException {
        Path out = Path.of("target", "golden-parity-cpu.txt");
        Files.createDirectories(out.getParent());
        Files.writeString(out, TABLE.toString());
    }
}
