package io.hspmn;

import org.junit.jupiter.api.Assumptions;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The repository's Python venv (ci/venv.sh: torch, safetensors) running a script of native/reference/, for the
 * tests that check Java against the PyTorch side. Tests run from their module's folder: the repository is two
 * folders up. Without the venv the calling test is skipped, saying so (CI has it).
 */
public final class ReferencePython {
    public static final Path REPO = Path.of("..", "..").toAbsolutePath().normalize();
    public static final Path PYTHON = REPO.resolve(".venv/bin/python");
    public static final Path REFERENCE = REPO.resolve("native/reference");

    private ReferencePython() {
    }

    /** The exit status and the output (stdout and stderr together). */
    public record Result(int exit, String out) {
        /** The last line, where the scripts print their JSON summary. */
        public String lastLine() {
            return out.strip().lines().reduce((a, b) -> b).orElseThrow();
        }
    }

    /** Runs {@code python args...} in native/reference/; fails the test when it takes over {@code timeoutSeconds}. */
    public static Result run(int timeoutSeconds, String... args) throws IOException, InterruptedException {
        Assumptions.assumeTrue(Files.isExecutable(PYTHON),
                "skipped: no Python venv at " + PYTHON + " (ci/venv.sh makes it) to run the PyTorch reference");
        List<String> cmd = new ArrayList<>(List.of(PYTHON.toString()));
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).directory(REFERENCE.toFile()).redirectErrorStream(true).start();
        byte[] out = p.getInputStream().readAllBytes();
        assertTrue(p.waitFor(timeoutSeconds, TimeUnit.SECONDS), String.join(" ", args) + " timed out");
        return new Result(p.exitValue(), new String(out, StandardCharsets.UTF_8));
    }
}
