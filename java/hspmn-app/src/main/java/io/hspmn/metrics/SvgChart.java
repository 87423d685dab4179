package io.hspmn.metrics;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * One line chart as inline SVG: axes with round-number ticks and labels, a legend, one polyline
 * per series (broken where a value is missing or not finite, a dot where a point stands alone),
 * optional dashed horizontal reference lines. Markup is XML-clean so the page parses as XHTML too.
 */
final class SvgChart {
    /** A named series; xs and ys have the same length, NaN marks a gap. */
    record Series(String name, String color, double[] xs, double[] ys, boolean dots) {
    }

    /** A horizontal line across the plot, such as the corpus's unigram entropy. */
    record Reference(String name, String color, double y) {
    }

    static final int WIDTH = 760;
    static final int HEIGHT = 320;
    private static final int LEFT = 76;
    private static final int RIGHT = 180; // room for the legend
    private static final int TOP = 36;
    private static final int BOTTOM = 50;

    private final String title;
    private final String xLabel;
    private final String yLabel;
    private final List<Series> series = new ArrayList<>();
    private final List<Reference> references = new ArrayList<>();
    private Double yMinFixed;
    private Double yMaxFixed;

    SvgChart(String title, String xLabel, String yLabel) {
        this.title = title;
        this.xLabel = xLabel;
        this.yLabel = yLabel;
    }

    SvgChart add(Series s) {
        series.add(s);
        return this;
    }

    SvgChart reference(Reference r) {
        references.add(r);
        return this;
    }

    SvgChart yRange(double min, double max) {
        yMinFixed = min;
        yMaxFixed = max;
        return this;
    }

    String render() {
        double xMin = Double.POSITIVE_INFINITY;
        double xMax = Double.NEGATIVE_INFINITY;
        double yMin = Double.POSITIVE_INFINITY;
        double yMax = Double.NEGATIVE_INFINITY;
        for (Series s : series) {
            for (int i = 0; i < s.xs().length; i++) {
                if (Double.isFinite(s.xs()[i]) && Double.isFinite(s.ys()[i])) {
                    xMin = Math.min(xMin, s.xs()[i]);
                    xMax = Math.max(xMax, s.xs()[i]);
                    yMin = Math.min(yMin, s.ys()[i]);
                    yMax = Math.max(yMax, s.ys()[i]);
                }
            }
        }
        for (Reference r : references) {
            yMin = Math.min(yMin, r.y());
            yMax = Math.max(yMax, r.y());
        }
        if (yMinFixed != null) {
            yMin = Math.min(yMinFixed, Double.isFinite(yMin) ? yMin : yMinFixed);
            yMax = Math.max(yMaxFixed, Double.isFinite(yMax) ? yMax : yMaxFixed);
        }
        boolean empty = !Double.isFinite(xMin);
        if (empty) {
            xMin = 0;
            xMax = 1;
        }
        if (!Double.isFinite(yMin)) {
            yMin = 0;
            yMax = 1;
        }
        if (xMax <= xMin) { // one step: centre it
            xMin = Math.max(0, xMin - 1);
            xMax = xMax + 1;
        }
        if (yMax <= yMin) {
            double pad = yMin == 0 ? 1 : Math.abs(yMin) * 0.1;
            yMin -= pad;
            yMax += pad;
        }
        double[] xt = ticks(xMin, xMax, 8);
        double[] yt = ticks(yMin, yMax, 6);
        xMin = Math.min(xMin, xt[0]);
        xMax = Math.max(xMax, xt[xt.length - 1]);
        yMin = Math.min(yMin, yt[0]);
        yMax = Math.max(yMax, yt[yt.length - 1]);

        int pw = WIDTH - LEFT - RIGHT;
        int ph = HEIGHT - TOP - BOTTOM;
        Scale sx = new Scale(xMin, xMax, LEFT, LEFT + pw);
        Scale sy = new Scale(yMin, yMax, TOP + ph, TOP);

        StringBuilder b = new StringBuilder();
        b.append("<svg class=\"chart\" width=\"").append(WIDTH).append("\" height=\"").append(HEIGHT)
                .append("\" viewBox=\"0 0 ").append(WIDTH).append(' ').append(HEIGHT).append("\" role=\"img\" aria-label=\"")
                .append(Html.escape(title)).append("\">\n");
        b.append("<text class=\"title\" x=\"").append(LEFT).append("\" y=\"22\">").append(Html.escape(title)).append("</text>\n");
        b.append("<rect class=\"plot\" x=\"").append(LEFT).append("\" y=\"").append(TOP).append("\" width=\"").append(pw)
                .append("\" height=\"").append(ph).append("\"/>\n");
        double xStep = xt.length > 1 ? xt[1] - xt[0] : 1;
        for (double t : xt) {
            double x = sx.map(t);
            b.append(line(x, TOP, x, TOP + ph, "grid"));
            b.append("<text class=\"tick\" x=\"").append(f(x)).append("\" y=\"").append(TOP + ph + 16)
                    .append("\" text-anchor=\"middle\">").append(label(t, xStep)).append("</text>\n");
        }
        double yStep = yt.length > 1 ? yt[1] - yt[0] : 1;
        for (double t : yt) {
            double y = sy.map(t);
            b.append(line(LEFT, y, LEFT + pw, y, "grid"));
            b.append("<text class=\"tick\" x=\"").append(LEFT - 6).append("\" y=\"").append(f(y + 4))
                    .append("\" text-anchor=\"end\">").append(label(t, yStep)).append("</text>\n");
        }
        b.append(line(LEFT, TOP + ph, LEFT + pw, TOP + ph, "axis"));
        b.append(line(LEFT, TOP, LEFT, TOP + ph, "axis"));
        b.append("<text class=\"label\" x=\"").append(LEFT + pw / 2).append("\" y=\"").append(HEIGHT - 10)
                .append("\" text-anchor=\"middle\">").append(Html.escape(xLabel)).append("</text>\n");
        b.append("<text class=\"label\" transform=\"translate(16,").append(TOP + ph / 2).append(") rotate(-90)\" text-anchor=\"middle\">")
                .append(Html.escape(yLabel)).append("</text>\n");

        for (Reference r : references) {
            String y = f(sy.map(r.y()));
            line(b, Integer.toString(LEFT), y, Integer.toString(LEFT + pw), y, r.color(), REFERENCE_STROKE);
        }
        for (Series s : series) {
            plot(b, s, sx, sy);
        }
        if (empty) {
            b.append("<text class=\"label\" x=\"").append(LEFT + pw / 2).append("\" y=\"").append(TOP + ph / 2)
                    .append("\" text-anchor=\"middle\">no data</text>\n");
        }
        int ly = TOP + 8;
        int lx = LEFT + pw + 14;
        for (Series s : series) {
            legend(b, lx, ly, s.name(), s.color(), SERIES_STROKE);
            ly += 18;
        }
        for (Reference r : references) {
            legend(b, lx, ly, r.name(), r.color(), REFERENCE_STROKE);
            ly += 18;
        }
        b.append("</svg>\n");
        return b.toString();
    }

    private static final String SERIES_STROKE = "stroke-width=\"2.5\"";
    private static final String REFERENCE_STROKE = "stroke-width=\"1.5\" stroke-dasharray=\"6 4\"";

    private static void line(StringBuilder b, String x1, String y1, String x2, String y2, String color, String stroke) {
        b.append("<line x1=\"").append(x1).append("\" y1=\"").append(y1).append("\" x2=\"").append(x2).append("\" y2=\"")
                .append(y2).append("\" stroke=\"").append(color).append("\" ").append(stroke).append("/>\n");
    }

    /** A legend entry at (x, y): a short line drawn as the curve is, then the name. */
    private static void legend(StringBuilder b, int x, int y, String name, String color, String stroke) {
        line(b, Integer.toString(x), Integer.toString(y), Integer.toString(x + 22), Integer.toString(y), color, stroke);
        b.append("<text class=\"legend\" x=\"").append(x + 28).append("\" y=\"").append(y + 4).append("\">")
                .append(Html.escape(name)).append("</text>\n");
    }

    private static void plot(StringBuilder b, Series s, Scale sx, Scale sy) {
        List<String> run = new ArrayList<>();
        for (int i = 0; i <= s.xs().length; i++) {
            boolean ok = i < s.xs().length && Double.isFinite(s.xs()[i]) && Double.isFinite(s.ys()[i]);
            if (ok) {
                run.add(f(sx.map(s.xs()[i])) + "," + f(sy.map(s.ys()[i])));
            }
            if (!ok || i == s.xs().length - 1) {
                if (run.size() == 1 || (s.dots() && !run.isEmpty())) {
                    for (String p : run) {
                        String[] xy = p.split(",");
                        b.append("<circle cx=\"").append(xy[0]).append("\" cy=\"").append(xy[1]).append("\" r=\"3\" fill=\"")
                                .append(s.color()).append("\"/>\n");
                    }
                }
                if (run.size() > 1) {
                    b.append("<polyline fill=\"none\" stroke=\"").append(s.color()).append("\" stroke-width=\"2\" points=\"")
                            .append(String.join(" ", run)).append("\"/>\n");
                }
                run.clear();
            }
        }
    }

    private static String line(double x1, double y1, double x2, double y2, String cls) {
        return "<line class=\"" + cls + "\" x1=\"" + f(x1) + "\" y1=\"" + f(y1) + "\" x2=\"" + f(x2) + "\" y2=\"" + f(y2) + "\"/>\n";
    }

    /** Round-number ticks covering [lo, hi]: steps of 1, 2 or 5 times a power of ten. */
    static double[] ticks(double lo, double hi, int target) {
        double raw = (hi - lo) / Math.max(1, target);
        double mag = Math.pow(10, Math.floor(Math.log10(raw)));
        double step = mag;
        for (double m : new double[] {1, 2, 5, 10}) {
            if (m * mag >= raw) {
                step = m * mag;
                break;
            }
        }
        double first = Math.floor(lo / step) * step;
        double last = Math.ceil(hi / step) * step;
        int n = (int) Math.round((last - first) / step) + 1;
        double[] t = new double[n];
        for (int i = 0; i < n; i++) {
            t[i] = first + i * step;
        }
        return t;
    }

    /** A tick label with as many decimals as the tick step needs. */
    static String label(double v, double step) {
        int decimals = Math.max(0, (int) Math.ceil(-Math.log10(step) - 1e-9));
        if (Math.abs(v) < step * 1e-6) {
            v = 0; // no "-0.00"
        }
        if (Math.abs(v) >= 1e6 && decimals == 0) {
            return String.format(Locale.ROOT, "%.3g", v);
        }
        if (decimals > 3) {
            // "0.00025" crowds the axis label; a learning rate reads as well in exponent form.
            return v == 0 ? "0" : String.format(Locale.ROOT, "%.1e", v);
        }
        return String.format(Locale.ROOT, "%." + decimals + "f", v);
    }

    private static String f(double v) {
        return String.format(Locale.ROOT, "%.1f", v);
    }

    private record Scale(double lo, double hi, double from, double to) {
        double map(double v) {
            return from + (v - lo) / (hi - lo) * (to - from);
        }
    }
}
