/**
 * An example HTTP service on {@code com.sun.net.httpserver} (no framework; Gson for JSON) over one
 * {@link io.hspmn.generate.Engine}: POST /v1/generate (server-sent events), POST /v1/score, GET /health,
 * GET /metrics (Prometheus text). {@link io.hspmn.serve.Server#main} is the entry point; the options and
 * limits are {@link io.hspmn.serve.ServerOptions}. Loopback by default, no authentication or TLS.
 */
package io.hspmn.serve;
