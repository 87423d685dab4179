package io.hspmn.metrics;

import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.AtomicLong;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ProgressBarTest {
    private static final long SECOND = 1_000_000_000L;
    final ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    final PrintStream out = new PrintStream(bytes, true, StandardCharsets.UTF_8);
    final AtomicLong now = new AtomicLong(1000 * SECOND);

    private String text() {
        return bytes.toString(StandardCharsets.UTF_8);
    }

    @Test
    void plainLinesAtTheFirstStepEveryIntervalAndTheEnd() {
        ProgressBar bar = new ProgressBar(101, out, false, 10, now::get);
        for (int step = 1; step <= 101; step++) {
            bar.update(step, 2.0, 2.885, 5000);
            now.addAndGet(SECOND); // one step a second
        }
        String[] lines = text().split("\n");
        // step 1 at t=0, then the first update 10 s later or more: steps 11, 21, ..., 101
        assertEquals(11, lines.length, text());
        assertFalse(text().contains("\r"), "no carriage returns into a file");
        assertTrue(lines[0].startsWith("step 1/101"), lines[0]);
        assertTrue(lines[1].startsWith("step 11/101"), lines[1]);
        // 10 steps took 10 s, 90 left: 90 s
        assertTrue(lines[1].contains("ETA 0:01:30"), lines[1]);
        assertTrue(lines[1].contains("loss 2.0000") && lines[1].contains("bpb 2.885") && lines[1].contains("5000 tok/s"), lines[1]);
        assertTrue(lines[10].startsWith("step 101/101 100%"), lines[10]);
        assertTrue(lines[10].contains("ETA 0:01:40 total"), lines[10]);
    }

    @Test
    void terminalRedrawsInPlaceAtMostTenTimesASecond() {
        ProgressBar bar = new ProgressBar(1000, out, true, 10, now::get);
        for (int step = 1; step <= 1000; step++) {
            bar.update(step, step < 500 ? 123.456789 : 1.5, 2.0, 2.5e6);
            now.addAndGet(SECOND / 100); // 100 steps a second
        }
        String t = text();
        long redraws = t.chars().filter(c -> c == '\r').count();
        assertTrue(redraws >= 100 && redraws <= 102, redraws + " redraws over 10 s");
        assertTrue(t.endsWith("\n"), "the last step ends the line");
        assertEquals(1, t.chars().filter(c -> c == '\n').count());
        String last = t.substring(t.lastIndexOf('\r') + 1, t.length() - 1);
        assertTrue(last.startsWith("step 1000/1000 [####################] 100%"), last);
        assertTrue(last.contains("2.50M tok/s"), last);
        // The first line after the loss drops to 1.5 is two characters shorter, and padded over the longer one before it.
        String[] draws = t.split("\r");
        int drop = 1;
        while (!draws[drop].contains("loss 1.5000")) {
            drop++;
        }
        assertTrue(draws[drop - 1].contains("loss 123.4568"));
        assertEquals(draws[drop - 1].length(), draws[drop].length());
        assertTrue(draws[drop].endsWith("  "), "ends in the padding");
    }

    @Test
    void resumedRunsCountTheirEtaFromTheirOwnFirstStep() {
        ProgressBar bar = new ProgressBar(200, out, false, 0, now::get);
        bar.update(100, 1, 1, 1); // resumed at step 100
        assertTrue(text().contains("ETA --:--:--"), text());
        now.addAndGet(50 * SECOND);
        bar.update(150, 1, 1, 1); // 50 steps in 50 s: 50 s to go
        assertTrue(text().contains("step 150/200 [") == false && text().contains("ETA 0:00:50"), text());
    }

    @Test
    void formatsDurationsAndRates() {
        assertEquals("0:00:00", ProgressBar.formatDuration(0));
        assertEquals("1:01:01", ProgressBar.formatDuration(3661));
        assertEquals("27:46:40", ProgressBar.formatDuration(100000));
        assertEquals("--:--:--", ProgressBar.formatDuration(Double.NaN));
        assertEquals("999", ProgressBar.rate(999.4));
        assertEquals("12.3k", ProgressBar.rate(12345));
        assertEquals("1.23M", ProgressBar.rate(1234567));
        assertEquals("-", ProgressBar.rate(Double.POSITIVE_INFINITY));
        assertThrows(IllegalArgumentException.class, () -> new ProgressBar(0, out, false, 1, now::get));
    }
}
