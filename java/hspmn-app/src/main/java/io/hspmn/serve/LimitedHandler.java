package io.hspmn.serve;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpHandler;

import java.io.IOException;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A POST endpoint that uses the model: exactly its path (else 404), its body read in full first (bounded in
 * size and in time: {@link HttpIo#readBody}), then one of the service's concurrency permits for the rest of
 * the request (none left: 429 at once), and every failure turned into a JSON error with the right status
 * while the server goes on. The body comes before the permit so that clients sending slowly, or not at all,
 * cannot hold the permits that the others need. Records the request in the metrics.
 */
abstract class LimitedHandler implements HttpHandler {
    final Service service;
    private final String path;

    LimitedHandler(Service service, String path) {
        this.service = service;
        this.path = path;
    }

    /**
     * Serves the request whose body is {@code body}; returns the status sent. Throws {@link HttpError} before
     * anything is sent. Calls {@code done} once the model work is over and before the last bytes go out, so a
     * client that sends its next request the moment it has read this response finds the permit free again.
     */
    abstract int serve(HttpExchange ex, byte[] body, Runnable done) throws IOException;

    @Override
    public final void handle(HttpExchange ex) {
        long t0 = System.nanoTime();
        int code = 500;
        try {
            if (!ex.getRequestURI().getPath().equals(path)) {
                throw new HttpError(404, "no endpoint " + ex.getRequestURI().getPath());
            }
            HttpIo.requireMethod(ex, "POST");
            ServerOptions o = service.options();
            byte[] body = HttpIo.readBody(ex, o.maxBodyBytes(), o.bodyTimeoutMillis(), service.timer());
            if (!service.permits().tryAcquire()) {
                service.metrics().rejected.increment();
                throw new HttpError(429, "too many requests in flight (limit " + o.maxConcurrent() + "); retry later");
            }
            AtomicBoolean held = new AtomicBoolean(true);
            Runnable release = () -> {
                if (held.getAndSet(false)) {
                    service.permits().release();
                }
            };
            try {
                code = serve(ex, body, release);
            } finally {
                release.run();
            }
        } catch (HttpError e) {
            code = e.status();
            trySendError(ex, e.status(), e.getMessage());
        } catch (IOException e) {
            code = 499; // the client closed the connection (nginx's convention), nothing more to send
        } catch (RuntimeException e) {
            code = 500;
            LOG.log(System.Logger.Level.ERROR, "internal error serving " + path, e);
            trySendError(ex, 500, "internal error: " + HttpIo.describe(e));
        } finally {
            service.metrics().request(path, code, (System.nanoTime() - t0) / 1e9);
            ex.close();
        }
    }

    static final System.Logger LOG = System.getLogger(LimitedHandler.class.getName());

    private static void trySendError(HttpExchange ex, int status, String message) {
        if (ex.getResponseCode() != -1) {
            return; // a response is under way (a stream): the error went out as an event, if at all
        }
        try {
            HttpIo.sendError(ex, status, message);
        } catch (IOException ignored) {
            // the client is gone
        }
    }
}
