package io.hspmn.metrics;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Objects;
import java.util.TreeMap;

/**
 * Turns a metrics file ({@link MetricsWriter}) into one self-contained HTML page: inline SVG charts
 * of loss, bits per byte (train, and validation where recorded), routed fraction per layer, learning
 * rate and gradient norm against step, and a summary table. No scripts, fonts, images or links, so
 * it opens offline, from CI artefacts, anywhere. The markup is also well-formed XML.
 *
 * <p>Lines that do not parse (a line a killed run left unfinished) are skipped and counted on the
 * page; when a step appears twice (a resumed run that overlapped) the later line wins. Past
 * {@link #MAX_POINTS} steps, every k-th step is drawn (the last always), to keep the page small.
 */
public final class HtmlReport {
    /** Most points drawn per series. */
    public static final int MAX_POINTS = 2000;

    private static final String[] LAYER_COLORS = {
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    };
    private static final String TRAIN = "#1f77b4";
    private static final String VAL = "#d62728";
    private static final String REFERENCE = "#555555";

    /**
     * What the page adds to the metrics.
     *
     * @param title                 heading of the page
     * @param unigramEntropyBits    drawn as the bar on the bits-per-byte chart, or null
     * @param targetRoutedFraction  drawn on the routed-fraction chart, or null
     */
    public record Options(String title, Double unigramEntropyBits, Double targetRoutedFraction) {
        public Options {
            Objects.requireNonNull(title, "title");
        }
    }

    private HtmlReport() {
    }

    /** Writes the report of {@code jsonl} to {@code html}, titled after the metrics file. */
    public static void write(Path jsonl, Path html) throws IOException {
        write(jsonl, html, new Options("Training report: " + jsonl.getFileName(), null, null));
    }

    public static void write(Path jsonl, Path html, Options options) throws IOException {
        List<String> lines = Files.readAllLines(jsonl, StandardCharsets.UTF_8);
        TreeMap<Long, StepMetrics> byStep = new TreeMap<>();
        int skipped = 0;
        for (String line : lines) {
            if (line.isBlank()) {
                continue;
            }
            try {
                StepMetrics m = StepMetrics.fromJson(line);
                byStep.put(m.step(), m);
            } catch (IllegalArgumentException e) {
                skipped++;
            }
        }
        // written beside and moved over: the trainer rewrites it while running, and a kill must not tear it
        Path tmp = html.resolveSibling(html.getFileName() + ".tmp");
        Files.writeString(tmp, render(new ArrayList<>(byStep.values()), skipped, options), StandardCharsets.UTF_8);
        Files.move(tmp, html, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    static String render(List<StepMetrics> steps, int skipped, Options o) {
        StringBuilder b = new StringBuilder();
        b.append("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>").append(Html.escape(o.title()))
                .append("</title>\n<style>\n")
                .append("body { font-family: sans-serif; margin: 24px; color: #222; background: #fff; }\n")
                .append("table { border-collapse: collapse; margin-bottom: 16px; }\n")
                .append("td, th { border: 1px solid #ccc; padding: 3px 10px; text-align: right; }\n")
                .append("th { background: #f3f3f3; text-align: left; }\n")
                .append(".chart { display: block; margin: 8px 0 20px 0; }\n")
                .append(".chart text { font-family: sans-serif; fill: #222; }\n")
                .append(".chart .title { font-size: 15px; font-weight: bold; }\n")
                .append(".chart .tick { font-size: 11px; fill: #444; }\n")
                .append(".chart .label { font-size: 12px; }\n")
                .append(".chart .legend { font-size: 12px; }\n")
                .append(".chart .plot { fill: #fcfcfc; stroke: none; }\n")
                .append(".chart .grid { stroke: #e4e4e4; stroke-width: 1; }\n")
                .append(".chart .axis { stroke: #333; stroke-width: 1.2; }\n")
                .append("</style>\n</head>\n<body>\n<h1>").append(Html.escape(o.title())).append("</h1>\n");

        if (steps.isEmpty()) {
            b.append("<p>No steps recorded yet.");
        } else {
            b.append(String.format(Locale.ROOT, "<p>%d steps recorded, %d to %d.", steps.size(), steps.get(0).step(),
                    steps.get(steps.size() - 1).step()));
        }
        if (skipped > 0) {
            b.append(' ').append(skipped).append(skipped == 1 ? " line" : " lines").append(" could not be read and were skipped.");
        }
        b.append("</p>\n");
        summary(b, steps, o);

        List<StepMetrics> drawn = thin(steps);
        double[] x = new double[drawn.size()];
        for (int i = 0; i < x.length; i++) {
            x[i] = drawn.get(i).step();
        }
        // From every step, not the thinned ones: validation runs are sparse and thinning could drop them all.
        List<StepMetrics> validated = thin(steps.stream().filter(StepMetrics::hasValidation).toList());
        double[] vx = validated.stream().mapToDouble(StepMetrics::step).toArray();

        SvgChart loss = new SvgChart("Loss", "step", "loss (nats)")
                .add(new SvgChart.Series("train loss", TRAIN, x, values(drawn, StepMetrics::loss), false));
        if (!validated.isEmpty()) {
            loss.add(new SvgChart.Series("validation loss", VAL, vx, values(validated, m -> or(m.valLoss())), true));
        }
        b.append(loss.render());

        SvgChart bpb = new SvgChart("Bits per byte", "step", "bits per byte")
                .add(new SvgChart.Series("train", TRAIN, x, values(drawn, StepMetrics::bitsPerByte), false));
        if (!validated.isEmpty()) {
            bpb.add(new SvgChart.Series("validation", VAL, vx, values(validated, m -> or(m.valBpb())), true));
        }
        if (o.unigramEntropyBits() != null) {
            bpb.reference(new SvgChart.Reference(String.format(Locale.ROOT, "unigram %.3f", o.unigramEntropyBits()), REFERENCE,
                    o.unigramEntropyBits()));
        }
        b.append(bpb.render());

        int layers = drawn.stream().mapToInt(m -> m.routedFraction().length).max().orElse(0);
        SvgChart routed = new SvgChart("Routed fraction per layer", "step", "fraction of tokens routed").yRange(0, 1);
        for (int l = 0; l < layers; l++) {
            int layer = l;
            routed.add(new SvgChart.Series("layer " + l, LAYER_COLORS[l % LAYER_COLORS.length], x,
                    values(drawn, m -> layer < m.routedFraction().length ? m.routedFraction()[layer] : Double.NaN), false));
        }
        List<StepMetrics> validatedRouting = validated.stream().filter(m -> m.valRoutedFraction() != null).toList();
        if (!validatedRouting.isEmpty()) {
            double[] rx = validatedRouting.stream().mapToDouble(StepMetrics::step).toArray();
            int valLayers = validatedRouting.stream().mapToInt(m -> m.valRoutedFraction().length).max().orElse(0);
            for (int l = 0; l < valLayers; l++) {
                int layer = l;
                routed.add(new SvgChart.Series("layer " + l + " (validation, no noise)", LAYER_COLORS[l % LAYER_COLORS.length], rx,
                        values(validatedRouting, m -> layer < m.valRoutedFraction().length ? m.valRoutedFraction()[layer] : Double.NaN),
                        true));
            }
        }
        if (o.targetRoutedFraction() != null) {
            routed.reference(new SvgChart.Reference(String.format(Locale.ROOT, "target %.2f", o.targetRoutedFraction()), REFERENCE,
                    o.targetRoutedFraction()));
        }
        b.append(routed.render());

        b.append(new SvgChart("Learning rate", "step", "learning rate")
                .add(new SvgChart.Series("lr", TRAIN, x, values(drawn, StepMetrics::lr), false)).render());
        b.append(new SvgChart("Gradient norm (before clipping)", "step", "global L2 norm")
                .add(new SvgChart.Series("grad norm", TRAIN, x, values(drawn, StepMetrics::gradNorm), false)).render());
        b.append("</body>\n</html>\n");
        return b.toString();
    }

    private static void summary(StringBuilder b, List<StepMetrics> steps, Options o) {
        if (steps.isEmpty()) {
            return;
        }
        StepMetrics last = steps.get(steps.size() - 1);
        b.append("<table>\n");
        row(b, "last step", Long.toString(last.step()));
        row(b, "train loss (nats)", num(last.loss(), 4));
        row(b, "train bits per byte", num(last.bitsPerByte(), 4));
        StepMetrics lastVal = null;
        double bestVal = Double.NaN;
        for (StepMetrics m : steps) {
            if (m.valBpb() != null) {
                lastVal = m;
                bestVal = Double.isNaN(bestVal) ? m.valBpb() : Math.min(bestVal, m.valBpb());
            }
        }
        if (lastVal != null) {
            row(b, "validation bits per byte (step " + lastVal.step() + ")", num(lastVal.valBpb(), 4));
            row(b, "best validation bits per byte", num(bestVal, 4));
        }
        if (o.unigramEntropyBits() != null) {
            row(b, "unigram entropy of the corpus", num(o.unigramEntropyBits(), 4));
        }
        double[] rf = last.routedFraction();
        for (int l = 0; l < rf.length; l++) {
            row(b, "routed fraction, layer " + l, num(rf[l], 3));
        }
        if (lastVal != null && lastVal.valRoutedFraction() != null) {
            double[] vr = lastVal.valRoutedFraction();
            for (int l = 0; l < vr.length; l++) {
                row(b, "validation routed fraction (no noise), layer " + l, num(vr[l], 3));
            }
        }
        double tok = steps.stream().mapToDouble(StepMetrics::tokS).filter(Double::isFinite).average().orElse(Double.NaN);
        row(b, "mean tokens per second", num(tok, 0));
        long mem = steps.stream().mapToLong(StepMetrics::memoryBytes).max().orElse(0);
        row(b, "peak memory", String.format(Locale.ROOT, "%.1f MiB", mem / 1048576.0));
        b.append("</table>\n");
    }

    private static void row(StringBuilder b, String name, String value) {
        b.append("<tr><th>").append(Html.escape(name)).append("</th><td>").append(Html.escape(value)).append("</td></tr>\n");
    }

    private static String num(double v, int decimals) {
        return Double.isFinite(v) ? String.format(Locale.ROOT, "%." + decimals + "f", v) : "-";
    }

    private static double or(Double v) {
        return v == null ? Double.NaN : v;
    }

    private static double[] values(List<StepMetrics> steps, java.util.function.ToDoubleFunction<StepMetrics> f) {
        return steps.stream().mapToDouble(f).toArray();
    }

    /** Every k-th step so at most MAX_POINTS remain, always keeping the last. */
    static List<StepMetrics> thin(List<StepMetrics> steps) {
        if (steps.size() <= MAX_POINTS) {
            return steps;
        }
        int k = (steps.size() + MAX_POINTS - 2) / (MAX_POINTS - 1);
        List<StepMetrics> out = new ArrayList<>();
        for (int i = 0; i < steps.size() - 1; i += k) {
            out.add(steps.get(i));
        }
        out.add(steps.get(steps.size() - 1));
        return out;
    }
}
