package io.hspmn;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.hspmn.io.SafeTensors;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;

/** One golden file of native/reference/make_goldens.py (format: native/README.md), loaded into arrays. */
final class GoldenCase {
    /** Tensors of a golden file that are not block parameters. */
    static final List<String> NON_PARAMETERS = List.of("x", "noise", "logits", "probs", "indices", "counts",
            "out", "aux", "d_out", "d_aux", "d_x");

    final String name;
    final HspmnConfig config;
    final ForwardOptions forward;
    final String description;
    final double margin;
    final SafeTensors file;
    private final String sha256;

    private GoldenCase(String name, SafeTensors file, String sha256) {
        this.name = name;
        this.file = file;
        this.sha256 = sha256;
        this.config = HspmnConfig.fromJson(file.metadata().get("config")).validate();
        JsonObject f = JsonParser.parseString(file.metadata().get("forward")).getAsJsonObject();
        this.forward = new ForwardOptions(f.get("training").getAsInt() != 0, f.get("noise").getAsInt() != 0,
                f.get("seed").getAsBigInteger().longValue(), f.get("step").getAsLong(), f.get("layer").getAsInt(),
                f.get("aux_target").getAsFloat());
        this.description = file.metadata().getOrDefault("description", "");
        this.margin = Double.parseDouble(file.metadata().getOrDefault("margin", "NaN"));
    }

    static Path directory() {
        String p = System.getProperty("hspmn.test.goldens");
        return Path.of(p != null ? p : "src/test/resources/goldens");
    }

    /** Every golden file, sorted by name; fails (not skips) when there are none. */
    static List<Path> files() {
        Path dir = directory();
        try (Stream<Path> s = Files.list(dir)) {
            List<Path> files = s.filter(p -> p.toString().endsWith(".safetensors")).sorted().toList();
            if (files.isEmpty()) {
                throw new IllegalStateException("no golden files in " + dir.toAbsolutePath()
                        + "; generate them with ci/goldens.sh --write");
            }
            return files;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot list golden files in " + dir.toAbsolutePath(), e);
        }
    }

    static GoldenCase load(Path path) {
        try {
            String n = path.getFileName().toString().replace(".safetensors", "");
            byte[] digest = java.security.MessageDigest.getInstance("SHA-256").digest(Files.readAllBytes(path));
            return new GoldenCase(n, SafeTensors.open(path), java.util.HexFormat.of().formatHex(digest));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** SHA-256 of the file, hex. */
    String sha256() {
        return sha256;
    }

    long[] shape(String tensor) {
        return file.entry(tensor).shape();
    }

    float[] floats(String tensor) {
        return file.floats(tensor);
    }

    int[] ints(String tensor) {
        return file.ints(tensor);
    }

    boolean has(String tensor) {
        return file.contains(tensor);
    }

    /** Parameter names present in the file (everything that is not an input, output or gradient). */
    List<String> parameterNames() {
        return file.names().stream().filter(n -> !NON_PARAMETERS.contains(n) && !n.startsWith("grad.")).toList();
    }

    /** The router temperature exp(log_temp) sits on or outside the clamp [0.1, 2.0]. */
    boolean temperatureClamped() {
        double t = Math.exp(floats("router.log_temp")[0]);
        return t <= 0.1 || t >= 2.0;
    }

    @Override
    public String toString() {
        return name;
    }
}
