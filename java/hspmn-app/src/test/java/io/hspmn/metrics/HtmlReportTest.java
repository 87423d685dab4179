package io.hspmn.metrics;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.w3c.dom.Document;
import org.w3c.dom.Element;
import org.w3c.dom.NodeList;

import javax.xml.parsers.DocumentBuilderFactory;
import java.io.ByteArrayInputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

class HtmlReportTest {
    @TempDir
    Path dir;

    /** Parses the page as XML (it is written XML-clean) and checks it needs nothing from outside. */
    private static Document parseSelfContained(Path html) throws Exception {
        String page = Files.readString(html);
        assertTrue(page.startsWith("<!DOCTYPE html>"), "an HTML5 page");
        for (String external : List.of("<script", "http:", "https:", "url(", "@import", "src=", "href=", "<link", "@font-face")) {
            assertFalse(page.toLowerCase().contains(external), "self-contained: no " + external);
        }
        DocumentBuilderFactory f = DocumentBuilderFactory.newInstance();
        f.setFeature("http://apache.org/xml/features/disallow-doctype-decl", false);
        f.setExpandEntityReferences(false);
        Document d = f.newDocumentBuilder().parse(new ByteArrayInputStream(page.getBytes(StandardCharsets.UTF_8)));
        assertEquals("html", d.getDocumentElement().getTagName());
        return d;
    }

    private static List<String> texts(Document d, String tag) {
        NodeList n = d.getElementsByTagName(tag);
        List<String> out = new ArrayList<>();
        for (int i = 0; i < n.getLength(); i++) {
            out.add(n.item(i).getTextContent());
        }
        return out;
    }

    private Path metrics(List<StepMetrics> steps) throws Exception {
        Path f = dir.resolve("metrics.jsonl");
        try (MetricsWriter w = MetricsWriter.create(f)) {
            for (StepMetrics m : steps) {
                w.write(m);
            }
        }
        return f;
    }

    @Test
    void emptyInputGivesAPageThatSaysSo() throws Exception {
        Path html = dir.resolve("r.html");
        HtmlReport.write(metrics(List.of()), html);
        Document d = parseSelfContained(html);
        assertEquals(5, d.getElementsByTagName("svg").getLength(), "every chart, with its axes");
        assertTrue(texts(d, "p").get(0).contains("No steps recorded"));
        assertEquals(0, d.getElementsByTagName("polyline").getLength());
        assertTrue(texts(d, "text").contains("no data"));
    }

    @Test
    void oneStepIsDrawnAsAPoint() throws Exception {
        Path html = dir.resolve("r.html");
        HtmlReport.write(metrics(List.of(StepMetricsTest.sample(1))), html);
        Document d = parseSelfContained(html);
        assertEquals(0, d.getElementsByTagName("polyline").getLength());
        // loss, bpb, 2 layers, lr, grad norm
        assertEquals(6, d.getElementsByTagName("circle").getLength());
        assertTrue(texts(d, "p").get(0).contains("1 steps recorded, 1 to 1"), texts(d, "p").get(0));
        List<String> labels = texts(d, "text");
        assertTrue(labels.contains("layer 0") && labels.contains("layer 1"), labels.toString());
        for (String axis : List.of("step", "loss (nats)", "bits per byte", "fraction of tokens routed")) {
            assertTrue(labels.contains(axis), "axis label " + axis);
        }
    }

    @Test
    void manyStepsWithValidationGapsAndOptions() throws Exception {
        List<StepMetrics> steps = new ArrayList<>();
        for (int s = 1; s <= 5000; s++) {
            double loss = s == 2500 ? Double.NaN : 5.5 * Math.exp(-s / 800.0) + 1.2;
            double aux = 0.01;
            double[] routed = {0.2 + 0.6 * Math.exp(-s / 300.0), 0.2 + 0.5 * Math.exp(-s / 500.0), 0.21, 0.19};
            StepMetrics m = new StepMetrics(s, loss, aux, (loss - aux) / Math.log(2), routed, 3e-4 * Math.min(1, s / 200.0), 2.0, 45_000,
                    200L << 20, null, null);
            steps.add(s % 250 == 0 ? m.withValidation(loss + 0.1, (loss + 0.1 - aux) / Math.log(2)) : m);
        }
        Path jsonl = metrics(steps);
        Files.writeString(jsonl, "{\"step\": 5001, \"loss\"", java.nio.file.StandardOpenOption.APPEND);
        Path html = dir.resolve("r.html");
        HtmlReport.write(jsonl, html, new HtmlReport.Options("Run <a & b>", 4.612, 0.2));
        Document d = parseSelfContained(html);
        assertEquals("Run <a & b>", texts(d, "h1").get(0), "the title is escaped, not markup");
        assertTrue(texts(d, "p").get(0).contains("5000 steps recorded, 1 to 5000. 1 line could not be read"), texts(d, "p").get(0));
        List<String> labels = texts(d, "text");
        assertTrue(labels.contains("unigram 4.612") && labels.contains("target 0.20") && labels.contains("validation"), labels.toString());
        // 20 validation points on the loss and bpb charts, dots not thinned away, less step 2500's NaN on each
        assertEquals(38, d.getElementsByTagName("circle").getLength());
        // The NaN at step 2500 splits train and validation loss and bpb in two each (validation dots are joined
        // by a line too); routed (4 layers), lr and grad norm are whole.
        NodeList lines = d.getElementsByTagName("polyline");
        assertEquals(2 * 4 + 4 + 1 + 1, lines.getLength());
        int points = 0;
        for (int i = 0; i < lines.getLength(); i++) {
            String pts = ((Element) lines.item(i)).getAttribute("points");
            for (String p : pts.split(" ")) {
                String[] xy = p.split(",");
                double x = Double.parseDouble(xy[0]);
                double y = Double.parseDouble(xy[1]);
                assertTrue(x >= 0 && x <= SvgChart.WIDTH && y >= 0 && y <= SvgChart.HEIGHT, "point " + p + " inside the chart");
                points++;
            }
        }
        assertTrue(points <= 10 * HtmlReport.MAX_POINTS, points + " points drawn");
        assertTrue(Files.size(html) < 1_000_000, "a 5000-step report stays small: " + Files.size(html));
        renderWithChromiumIfPresent(html);
    }

    @Test
    void laterLinesWinForARepeatedStep() throws Exception {
        StepMetrics first = StepMetricsTest.sample(3);
        StepMetrics again = new StepMetrics(3, 9.75, 0, 9.0, new double[] {0.5}, 0, 0, 0, 0, null, null);
        Path html = dir.resolve("r.html");
        HtmlReport.write(metrics(List.of(StepMetricsTest.sample(1), first, again)), html);
        Document d = parseSelfContained(html);
        assertTrue(texts(d, "p").get(0).contains("2 steps recorded"));
        assertTrue(texts(d, "td").contains("9.7500"), texts(d, "td").toString());
    }

    @Test
    void thinningKeepsTheLastStepAndAtMostMaxPoints() {
        List<StepMetrics> steps = new ArrayList<>();
        for (int s = 1; s <= 12345; s++) {
            steps.add(new StepMetrics(s, 1, 0, 1, null, 0, 0, 0, 0, null, null));
        }
        List<StepMetrics> t = HtmlReport.thin(steps);
        assertTrue(t.size() <= HtmlReport.MAX_POINTS, t.size() + " points");
        assertTrue(t.size() > HtmlReport.MAX_POINTS / 2);
        assertEquals(1, t.get(0).step());
        assertEquals(12345, t.get(t.size() - 1).step());
        assertEquals(steps.subList(0, 10), HtmlReport.thin(steps.subList(0, 10)));
    }

    @Test
    void ticksAreRoundAndCoverTheRange() {
        assertArrayEquals(new double[] {0, 200, 400, 600, 800, 1000}, SvgChart.ticks(1, 1000, 8), 1e-9);
        double[] t = SvgChart.ticks(1.234, 5.67, 6);
        assertTrue(t[0] <= 1.234 && t[t.length - 1] >= 5.67);
        assertEquals(1.0, t[1] - t[0], 1e-12);
        assertEquals("0.20", SvgChart.label(0.2, 0.05));
        assertEquals("1500", SvgChart.label(1500, 500));
        assertEquals("0", SvgChart.label(-1e-17, 1));
        assertEquals("0.0", SvgChart.label(-1e-17, 0.5), "no -0.0");
        assertEquals("0.003", SvgChart.label(3e-3, 1e-3));
        assertEquals("2.5e-04", SvgChart.label(2.5e-4, 5e-5));
        assertEquals("0", SvgChart.label(0, 5e-5));
    }

    /** Optional: a screenshot for a person to look at, when Chromium is installed. */
    private static void renderWithChromiumIfPresent(Path html) throws Exception {
        Path chromium = Path.of("/usr/bin/chromium");
        if (!Files.isExecutable(chromium)) {
            return;
        }
        Path png = html.resolveSibling("report.png");
        Process p = new ProcessBuilder(chromium.toString(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=900,1900",
                "--screenshot=" + png, html.toUri().toString()).redirectErrorStream(true).start();
        p.getInputStream().transferTo(java.io.OutputStream.nullOutputStream());
        assertTrue(p.waitFor(120, TimeUnit.SECONDS));
        assertTrue(Files.size(png) > 10_000, "chromium drew something");
    }
}
