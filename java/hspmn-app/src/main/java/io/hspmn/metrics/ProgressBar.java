package io.hspmn.metrics;

import java.io.Console;
import java.io.PrintStream;
import java.util.Locale;
import java.util.Objects;
import java.util.function.LongSupplier;

/**
 * Console progress: step/total, loss, bits per byte, tokens per second and the time left. On a
 * terminal it redraws one line in place with '\r' (at most 10 times a second, so printing never
 * slows a fast loop); into a file or pipe, where '\r' would pile up, it prints a plain line at the
 * first step, then every {@code plainEverySeconds}, and at the last step.
 */
public final class ProgressBar {
    private static final long REDRAW_NANOS = 100_000_000L;
    private static final int BAR_WIDTH = 20;

    private final long total;
    private final PrintStream out;
    private final boolean terminal;
    private final long plainEveryNanos;
    private final LongSupplier clock;
    private long firstStep = -1;
    private long firstNanos;
    private long lastPrintNanos;
    private int lastWidth;
    private boolean open; // a terminal line is drawn and not yet ended

    /**
     * @param total             the step count the run ends at
     * @param terminal          redraw in place (true) or print plain lines (false)
     * @param plainEverySeconds interval between plain lines
     * @param nanoClock         a monotonic clock in nanoseconds (System::nanoTime outside tests)
     */
    public ProgressBar(long total, PrintStream out, boolean terminal, double plainEverySeconds, LongSupplier nanoClock) {
        if (total < 1) {
            throw new IllegalArgumentException("total steps must be positive, got " + total);
        }
        this.total = total;
        this.out = Objects.requireNonNull(out, "out");
        this.terminal = terminal;
        this.plainEveryNanos = (long) (plainEverySeconds * 1e9);
        this.clock = Objects.requireNonNull(nanoClock, "nanoClock");
    }

    /** On System.out: in place when it is a terminal, plain lines every 10 seconds otherwise. */
    public static ProgressBar console(long total) {
        return new ProgressBar(total, System.out, isTerminal(), 10, System::nanoTime);
    }

    /** Whether standard output is an interactive terminal (System.console() alone no longer says so since JDK 22). */
    public static boolean isTerminal() {
        Console c = System.console();
        return c != null && c.isTerminal();
    }

    /** Reports that {@code step} (1-based, up to total) finished. */
    public void update(long step, double loss, double bitsPerByte, double tokensPerSecond) {
        long now = clock.getAsLong();
        if (firstStep < 0) {
            // The ETA counts from the first step seen, so a resumed run does not credit itself with the steps before it.
            firstStep = step;
            firstNanos = now;
            lastPrintNanos = now;
            emit(line(step, loss, bitsPerByte, tokensPerSecond, now));
            return;
        }
        boolean last = step >= total;
        long gap = terminal ? REDRAW_NANOS : plainEveryNanos;
        if (last || now - lastPrintNanos >= gap) {
            lastPrintNanos = now;
            emit(line(step, loss, bitsPerByte, tokensPerSecond, now));
        }
        if (last) {
            finish();
        }
    }

    /** Ends the in-place line, if one is drawn, so later output starts on a fresh line. */
    public void finish() {
        if (open) {
            out.println();
            out.flush();
            open = false;
        }
    }

    private void emit(String text) {
        if (terminal) {
            // Pad over the previous, possibly longer, line.
            int pad = Math.max(0, lastWidth - text.length());
            out.print("\r" + text + " ".repeat(pad));
            lastWidth = text.length();
            open = true;
        } else {
            out.println(text);
        }
        out.flush();
    }

    String line(long step, double loss, double bpb, double tokS, long now) {
        StringBuilder b = new StringBuilder();
        b.append("step ").append(step).append('/').append(total);
        if (terminal) {
            int filled = (int) Math.max(0, Math.min(BAR_WIDTH, step * BAR_WIDTH / total));
            b.append(" [").append("#".repeat(filled)).append("-".repeat(BAR_WIDTH - filled)).append(']');
        }
        b.append(String.format(Locale.ROOT, " %3d%%", (int) Math.min(100, step * 100 / total)));
        b.append(String.format(Locale.ROOT, " | loss %.4f | bpb %.3f | %s tok/s | ETA %s", loss, bpb, rate(tokS), eta(step, now)));
        return b.toString();
    }

    private String eta(long step, long now) {
        long done = step - firstStep;
        if (step >= total) {
            return formatDuration((now - firstNanos) / 1e9) + " total";
        }
        if (done <= 0 || now <= firstNanos) {
            return "--:--:--";
        }
        double perStep = (now - firstNanos) / 1e9 / done;
        return formatDuration(perStep * (total - step));
    }

    static String formatDuration(double seconds) {
        if (!Double.isFinite(seconds) || seconds < 0) {
            return "--:--:--";
        }
        long s = Math.round(seconds);
        return String.format(Locale.ROOT, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
    }

    static String rate(double tokS) {
        if (!Double.isFinite(tokS)) {
            return "-";
        }
        if (tokS >= 1e6) {
            return String.format(Locale.ROOT, "%.2fM", tokS / 1e6);
        }
        if (tokS >= 1e4) {
            return String.format(Locale.ROOT, "%.1fk", tokS / 1e3);
        }
        return String.format(Locale.ROOT, "%.0f", tokS);
    }
}
