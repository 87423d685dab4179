package io.hspmn.metrics;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * A program's {@code --json} result file (hspmn eval, Bench, LoadClient): pretty-printed UTF-8 with one
 * trailing newline, its folder made when missing. NaN and infinities are written as such (a measurement
 * that failed) rather than refused.
 */
public final class JsonFile {
    private static final Gson GSON = new GsonBuilder().setPrettyPrinting().serializeSpecialFloatingPointValues().create();

    private JsonFile() {
    }

    /** Writes {@code json} (a JsonElement, or maps and lists of plain values) to {@code path}. */
    public static void write(Path path, Object json) throws IOException {
        Path parent = path.toAbsolutePath().getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
        Files.writeString(path, GSON.toJson(json) + "\n", StandardCharsets.UTF_8);
    }
}
