/**
 * Training metrics: one JSON line per step ({@link io.hspmn.metrics.MetricsWriter}), a console
 * {@link io.hspmn.metrics.ProgressBar}, and a self-contained HTML report ({@link io.hspmn.metrics.HtmlReport}).
 */
package io.hspmn.metrics;
