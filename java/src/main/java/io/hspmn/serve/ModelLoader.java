package io.hspmn.serve;

import io.hspmn.Backend;
import io.hspmn.checkpoint.Checkpoint;
import io.hspmn.generate.NativeLm;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.stream.Stream;

/**
 * Where the service's model comes from: a checkpoint of the trainer (io.hspmn.checkpoint.Checkpoint, one
 * safetensors file holding the config and the weights), or a seeded random model.
 */
final class ModelLoader {
    private ModelLoader() {
    }

    /**
     * The checkpoint file for {@code path}: the path itself when it is a file; in a directory, the most
     * recently modified {@code *.safetensors} (the trainer's newest). TODO: follow the trainer's own
     * "latest" marker once its directory layout is on main.
     */
    static Path resolve(Path path) {
        if (Files.isRegularFile(path)) {
            return path;
        }
        if (!Files.isDirectory(path)) {
            throw new IllegalArgumentException("--ckpt " + path + ": no such file or directory");
        }
        try (Stream<Path> s = Files.list(path)) {
            return s.filter(p -> p.getFileName().toString().endsWith(".safetensors") && Files.isRegularFile(p))
                    .max(Comparator.comparing(ModelLoader::modified).thenComparing(Path::toString))
                    .orElseThrow(() -> new IllegalArgumentException("--ckpt " + path + ": no *.safetensors checkpoint in it"));
        } catch (IOException e) {
            throw new UncheckedIOException("--ckpt " + path + ": " + e.getMessage(), e);
        }
    }

    private static long modified(Path p) {
        try {
            return Files.getLastModifiedTime(p).toMillis();
        } catch (IOException e) {
            return Long.MIN_VALUE;
        }
    }

    static NativeLm load(Path path, Backend backend, int threads) {
        Path file = resolve(path);
        Checkpoint ckpt;
        try {
            ckpt = Checkpoint.load(file);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read checkpoint " + file + ": " + e.getMessage(), e);
        }
        return NativeLm.load(ckpt, backend, threads);
    }
}
