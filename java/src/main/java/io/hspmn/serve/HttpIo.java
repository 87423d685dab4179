package io.hspmn.serve;

import com.google.gson.JsonObject;
import com.sun.net.httpserver.HttpExchange;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;

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

    /** The body, at most {@code max} bytes; a longer one (declared or sent) is a 413 before it is read in full. */
    static byte[] readBody(HttpExchange ex, int max) throws IOException {
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
        InputStream in = ex.getRequestBody();
        byte[] buf = in.readNBytes(max + 1);
        if (buf.length > max) {
            throw new HttpError(413, "the body is longer than the limit of " + max + " bytes");
        }
        return buf;
    }

    static void sendJson(HttpExchange ex, int status, JsonObject body) throws IOException {
        byte[] b = body.toString().getBytes(StandardCharsets.UTF_8);
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

    /**
     * {"error": {"status": N, "message": "..."}}. A 413 or 429 also closes the connection, so a large body
     * the client is still sending is not read.
     */
    static void sendError(HttpExchange ex, int status, String message) throws IOException {
        JsonObject e = new JsonObject();
        e.addProperty("status", status);
        e.addProperty("message", message);
        JsonObject o = new JsonObject();
        o.add("error", e);
        if (status == 413 || status == 429) {
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
        os.write(("event: " + name + "\ndata: " + data + "\n\n").getBytes(StandardCharsets.UTF_8));
        os.flush();
    }
}
