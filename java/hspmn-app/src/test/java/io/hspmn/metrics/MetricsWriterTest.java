package io.hspmn.metrics;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

class MetricsWriterTest {
    @TempDir
    Path dir;

    /** A fresh file of steps 1..n. */
    private static void writeSteps(Path f, int n) throws IOException {
        try (MetricsWriter w = MetricsWriter.create(f)) {
            for (int step = 1; step <= n; step++) {
                w.write(StepMetricsTest.sample(step));
            }
        }
    }

    @Test
    void eachLineIsInTheFileWhenWriteReturns() throws IOException {
        Path f = dir.resolve("metrics.jsonl");
        try (MetricsWriter w = MetricsWriter.create(f)) {
            for (int step = 1; step <= 5; step++) {
                w.write(StepMetricsTest.sample(step));
                List<String> lines = Files.readAllLines(f);
                assertEquals(step, lines.size(), "no buffering: the line is readable before close");
                assertEquals(StepMetricsTest.sample(step), StepMetrics.fromJson(lines.get(step - 1)));
            }
            w.sync();
        }
        assertTrue(Files.readString(f).endsWith("}\n"));
    }

    @Test
    void createEmptiesAnOldFile() throws IOException {
        Path f = dir.resolve("m.jsonl");
        Files.writeString(f, "old run\nmore of it\n");
        writeSteps(f, 1);
        assertEquals(1, Files.readAllLines(f).size());
    }

    @Test
    void resumeKeepsTheCheckpointsStepsAndDropsTheRest() throws IOException {
        Path f = dir.resolve("m.jsonl");
        writeSteps(f, 10);
        Files.writeString(f, "{\"step\": 11, \"loss\": 2.", java.nio.file.StandardOpenOption.APPEND); // a cut line
        try (MetricsWriter w = MetricsWriter.resume(f, 6)) {
            w.write(StepMetricsTest.sample(7));
        }
        List<StepMetrics> steps = MetricsWriter.read(f);
        assertEquals(List.of(1L, 2L, 3L, 4L, 5L, 6L, 7L), steps.stream().map(StepMetrics::step).toList());
        assertEquals(7, Files.readAllLines(f).size(), "the cut line is gone, not glued to step 7");
        assertTrue(Files.notExists(dir.resolve("m.jsonl.tmp")));

        Path fresh = dir.resolve("new.jsonl");
        try (MetricsWriter w = MetricsWriter.resume(fresh, 100)) {
            w.write(StepMetricsTest.sample(101));
        }
        assertEquals(1, MetricsWriter.read(fresh).size());
    }

    @Test
    void aKilledRunKeepsEveryCompletedLine() throws Exception {
        Path f = dir.resolve("killed.jsonl");
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Process p = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"), MetricsKillTarget.class.getName(), f.toString())
                .redirectErrorStream(true).start();
        long reported = 0;
        try (BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
            String line;
            while (reported < 2000 && (line = out.readLine()) != null) {
                reported = Long.parseLong(line.trim());
            }
            p.destroyForcibly(); // SIGKILL: no shutdown hooks, no close()
            assertTrue(p.waitFor(30, TimeUnit.SECONDS));
        }
        assertEquals(2000, reported, "the child wrote 2000 steps before the kill");
        String text = Files.readString(f);
        List<String> lines = text.lines().toList();
        assertTrue(lines.size() >= reported, lines.size() + " lines for " + reported + " reported steps");
        for (int i = 0; i < lines.size() - 1; i++) {
            assertEquals(i + 1, StepMetrics.fromJson(lines.get(i)).step(), "line " + (i + 1));
        }
        if (text.endsWith("\n")) {
            assertEquals(lines.size(), StepMetrics.fromJson(lines.get(lines.size() - 1)).step());
        }
        // A line the kill interrupted mid-write could only be the last one; resume() would drop it.
        assertEquals(lines.size() - (text.endsWith("\n") ? 0 : 1), MetricsWriter.read(f).size());
    }
}
