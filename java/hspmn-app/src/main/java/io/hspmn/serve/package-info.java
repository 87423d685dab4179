/**
 * An example HTTP service on {@code com.sun.net.httpserver} (no framework; Gson for JSON) over one
 * {@link io.hspmn.generate.Engine}: POST /v1/generate (server-sent events), POST /v1/score, GET /health,
 * GET /metrics (Prometheus text). {@link io.hspmn.serve.Server#main} is the entry point; the options and
 * limits are {@link io.hspmn.serve.ServerOptions}. Loopback by default, no authentication or TLS.
 *
 * <p>Every answer of the handlers is JSON (errors as {@code {"error": {"status", "message"}}}, messages
 * without Java class names, numbers always finite). A POST body is read in full, within
 * {@code --body-timeout-ms}, before the request takes a concurrency permit, so slow clients hold none. The
 * JDK server itself answers some malformed requests before any handler runs, with its own HTML 400 (or 501
 * for an unsupported Transfer-Encoding) and {@code Connection: close}: a bad request line (a TLS handshake
 * on this port, for one), an unparseable URI, illegal header names, Content-Length together with
 * Transfer-Encoding, a repeated, non-numeric or negative Content-Length. These cannot be intercepted; the
 * README lists them.
 */
package io.hspmn.serve;
