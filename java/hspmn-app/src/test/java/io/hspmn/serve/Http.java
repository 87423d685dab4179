package io.hspmn.serve;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

/** A test client of the service: JSON requests and server-sent-event streams over java.net.http. */
final class Http {
    record Event(String name, JsonObject data) {
    }

    record Stream(int status, List<Event> events, String errorBody) {
        Event last() {
            return events.getLast();
        }

        List<Integer> tokens() {
            List<Integer> t = new ArrayList<>();
            for (Event e : events) {
                if (e.name().equals("token")) {
                    t.add(e.data().get("token").getAsInt());
                }
            }
            return t;
        }
    }

    final HttpClient client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1)
            .connectTimeout(Duration.ofSeconds(10)).build();
    final URI base;

    Http(URI base) {
        this.base = base;
    }

    HttpRequest.Builder post(String path, String body) {
        return HttpRequest.newBuilder(base.resolve(path)).timeout(Duration.ofSeconds(120))
                .header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofString(body));
    }

    HttpResponse<String> send(HttpRequest r) throws IOException, InterruptedException {
        return client.send(r, HttpResponse.BodyHandlers.ofString());
    }

    HttpResponse<String> postJson(String path, String body) throws IOException, InterruptedException {
        return send(post(path, body).build());
    }

    HttpResponse<String> get(String path) throws IOException, InterruptedException {
        return send(HttpRequest.newBuilder(base.resolve(path)).timeout(Duration.ofSeconds(60)).GET().build());
    }

    /** POST /v1/generate, reading the whole event stream. */
    Stream generate(String body) throws IOException, InterruptedException {
        HttpResponse<InputStream> r = client.send(post("/v1/generate", body).build(), HttpResponse.BodyHandlers.ofInputStream());
        try (InputStream in = r.body()) {
            if (r.statusCode() != 200) {
                return new Stream(r.statusCode(), List.of(), new String(in.readAllBytes(), StandardCharsets.UTF_8));
            }
            return new Stream(200, readEvents(in, Integer.MAX_VALUE), null);
        }
    }

    /** Up to {@code max} events of an SSE stream. */
    static List<Event> readEvents(InputStream in, int max) throws IOException {
        BufferedReader br = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8));
        List<Event> out = new ArrayList<>();
        String name = null;
        String data = null;
        String line;
        while (out.size() < max && (line = br.readLine()) != null) {
            if (line.isEmpty()) {
                if (name != null) {
                    out.add(new Event(name, JsonParser.parseString(data).getAsJsonObject()));
                }
                name = null;
                data = null;
            } else if (line.startsWith("event: ")) {
                name = line.substring(7);
            } else if (line.startsWith("data: ")) {
                data = line.substring(6);
            } else {
                throw new IOException("not an SSE line: " + line);
            }
        }
        return out;
    }

    /** The model description a test server reports: {"name": "fake"}. */
    static JsonObject fakeModel() {
        JsonObject m = new JsonObject();
        m.addProperty("name", "fake");
        return m;
    }

    static JsonObject json(HttpResponse<String> r) {
        return JsonParser.parseString(r.body()).getAsJsonObject();
    }
}
