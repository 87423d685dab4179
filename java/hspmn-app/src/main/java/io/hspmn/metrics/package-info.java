/**
 * Metrics: one JSON line per training step ({@link io.hspmn.metrics.MetricsWriter}), a console
 * {@link io.hspmn.metrics.ProgressBar}, a self-contained HTML report ({@link io.hspmn.metrics.HtmlReport}), and the
 * programs' --json result files ({@link io.hspmn.metrics.JsonFile}).
 */
package io.hspmn.metrics;
