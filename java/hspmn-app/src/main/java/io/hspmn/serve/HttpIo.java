package io.hspmn.serve;

import com.google.gson.Gson;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.TypeAdapter;
import com.google.gson.stream.JsonWriter;
import com.sun.net.httpserver.HttpExchange;

import java.io.IOException;
import java.io.OutputStream;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/** Reading bounded request bodies and writing JSON and server-sent events. */
final class HttpIo {
    private HttpIo() {
    }

    static void requireMethod(HttpExchange ex, String method) {
        if (!ex.getRequestMethod().equalsIgnoreCase(method)) {
            ex.getResponseHeaders().set("Allow", method);
            throw new HttpError(405, ex.getRequestMethod() + " is not allowed on " + ex.getRequestURI().getPath() + "; use " + method);
        }
    }

    /**
     * The body, at most {@code max} bytes; a longer one (declared or sent) is a 413 before it is read in full.
     * It must arrive within {@code timeoutMillis}: after that the timer interrupts the reading thread, which
     * closes the connection (the JDK server reads from an interruptible channel), and this throws a 408 (that
     * the client will not see). Callers read the body before they take a concurrency permit, so a client that
     * sends its body slowly holds a virtual thread and a socket for at most the timeout, and no permit.
     */
    static byte[] readBody(HttpExchange ex, int max, long timeoutMillis, ScheduledExecutorService timer) throws IOException {
        String declared = ex.getRequestHeaders().getFirst("Content-Length");
        if (declared != null) {
            long n;
            try {
                n = Long.parseLong(declared.trim());
            } catch (NumberFormatException e) {
                throw HttpError.badRequest("Content-Length is not a number: " + declared);
            }
            if (n > max) {
                throw new HttpError(413, "the body has " + n + " bytes; the limit is " + max);
            }
        }
        String type = ex.getRequestHeaders().getFirst("Content-Type");
        if (type != null && !type.toLowerCase(java.util.Locale.ROOT).startsWith("application/json")) {
            throw new HttpError(415, "Content-Type must be application/json, got " + type);
        }
        Deadline deadline = new Deadline(Thread.currentThread());
        ScheduledFuture<?> alarm = timer.schedule(deadline::expire, timeoutMillis, TimeUnit.MILLISECONDS);
        byte[] buf;
        try {
            buf = ex.getRequestBody().readNBytes(max + 1);
        } catch (IOException e) {
            if (deadline.finish()) {
                throw e;
            }
            buf = null;
        } finally {
            alarm.cancel(false);
        }
        if (buf == null || !deadline.finish()) {
            throw new HttpError(408, "the request body did not arrive within " + timeoutMillis + " ms");
        }
        if (buf.length > max) {
            throw new HttpError(413, "the body is longer than the limit of " + max + " bytes");
        }
        return buf;
    }

    /**
     * The race between a body read and its timer, decided under one lock: either the reader finishes first and
     * no interrupt ever comes, or the timer interrupts the reader inside the lock and the reader, once it gets
     * the lock, knows it timed out (and clears the interrupt it may not have consumed).
     */
    private static final class Deadline {
        private final Thread reader;
        private boolean expired;
        private boolean done;

        Deadline(Thread reader) {
            this.reader = reader;
        }

        synchronized void expire() {
            if (!done && !expired) {
                expired = true;
                reader.interrupt();
            }
        }

        /** Called by the reader: true when it finished in time; after a timeout, false with the interrupt cleared. */
        synchronized boolean finish() {
            if (expired) {
                Thread.interrupted();
                return false;
            }
            done = true;
            return true;
        }
    }

    /**
     * Sends {@code body} as JSON. Strict: a NaN or infinite number (which JSON cannot carry) throws
     * IllegalArgumentException before anything is sent, so a client never gets an unparseable body.
     */
    static void sendJson(HttpExchange ex, int status, JsonObject body) throws IOException {
        byte[] b = strictJson(body).getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "application/json; charset=utf-8");
        ex.sendResponseHeaders(status, b.length);
        try (OutputStream os = ex.getResponseBody()) {
            os.write(b);
        }
    }

    static void sendText(HttpExchange ex, int status, String contentType, String text) throws IOException {
        byte[] b = text.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", contentType);
        ex.sendResponseHeaders(status, b.length);
        try (OutputStream os = ex.getResponseBody()) {
            os.write(b);
        }
    }

    private static final TypeAdapter<JsonElement> JSON = new Gson().getAdapter(JsonElement.class);

    /** {@code e} as JSON text; IllegalArgumentException for a NaN or infinite number (JsonElement.toString writes them). */
    static String strictJson(JsonElement e) {
        StringWriter w = new StringWriter();
        try {
            JSON.write(new JsonWriter(w), e);
        } catch (IOException impossible) {
            throw new java.io.UncheckedIOException(impossible);
        }
        return w.toString();
    }

    /**
     * What a failure says to an HTTP client: its message, never the exception's class name (the service's
     * internals are no business of the client's); a failure without a message says only that it happened.
     */
    static String describe(Throwable t) {
        String m = t == null ? null : t.getMessage();
        return m == null || m.isBlank() ? "an internal error (see the server's log)" : m;
    }

    /**
     * {"error": {"status": N, "message": "..."}}. A 408, 413 or 429 also closes the connection, so a body the
     * client is still sending is not read.
     */
    static void sendError(HttpExchange ex, int status, String message) throws IOException {
        JsonObject e = new JsonObject();
        e.addProperty("status", status);
        e.addProperty("message", message);
        JsonObject o = new JsonObject();
        o.add("error", e);
        if (status == 408 || status == 413 || status == 429) {
            ex.getResponseHeaders().set("Connection", "close");
        }
        if (status == 429) {
            ex.getResponseHeaders().set("Retry-After", "1");
        }
        sendJson(ex, status, o);
    }

    /** Starts a stream of server-sent events (chunked). */
    static OutputStream startEvents(HttpExchange ex) throws IOException {
        ex.getResponseHeaders().set("Content-Type", "text/event-stream; charset=utf-8");
        ex.getResponseHeaders().set("Cache-Control", "no-cache");
        ex.getResponseHeaders().set("X-Accel-Buffering", "no");
        ex.sendResponseHeaders(200, 0);
        return ex.getResponseBody();
    }

    /** One event; JSON from Gson is one line, so one data line carries it. */
    static void event(OutputStream os, String name, JsonObject data) throws IOException {
        os.write(("event: " + name + "\ndata: " + strictJson(data) + "\n\n").getBytes(StandardCharsets.UTF_8));
        os.flush();
    }
}
