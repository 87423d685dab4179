package io.hspmn.serve;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpHandler;

import java.io.IOException;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A POST endpoint that uses the model: one of the service's concurrency permits for its whole duration
 * (none left: 429 at once), exactly its path (else 404), and every failure turned into a JSON error with
 * the right status while the server goes on. Records the request in the metrics.
 */
abstract class LimitedHandler implements HttpHandler {
    final Service service;
    private final String path;

    LimitedHandler(Service service, String path) {
        this.service = service;
        this.path = path;
    }

    /**
     * Serves the request; returns the status sent. Throws {@link HttpError} before anything is sent. Calls
     * {@code done} once the model work is over and before the last bytes go out, so a client that sends its
     * next request the moment it has read this response finds the permit free again.
     */
    abstract int serve(HttpExchange ex, Runnable done) throws IOException;

    @Override
    public final void handle(HttpExchange ex) {
        long t0 = System.nanoTime();
        int code = 500;
        try {
            if (!ex.getRequestURI().getPath().equals(path)) {
                throw new HttpError(404, "no endpoint " + ex.getRequestURI().getPath());
            }
            HttpIo.requireMethod(ex, "POST");
            if (!service.permits().tryAcquire()) {
                service.metrics().rejected.increment();
                throw new HttpError(429, "too many requests in flight (limit " + service.options().maxConcurrent()
                        + "); retry later");
            }
            AtomicBoolean held = new AtomicBoolean(true);
            Runnable release = () -> {
                if (held.getAndSet(false)) {
                    service.permits().release();
                }
            };
            try {
                code = serve(ex, release);
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
            trySendError(ex, 500, "internal error: " + e);
        } finally {
            service.metrics().request(path, code, (System.nanoTime() - t0) / 1e9);
            ex.close();
        }
    }

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
