package io.hspmn.train;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertTrue;

/** What the training tests share: the shipped corpus and running the CLI in a JVM of its own. */
public final class TrainingFixtures {
    /** data/corpus.txt (237,334 bytes of English prose, see data/README.md), from java/hspmn-app/ where the tests run. */
    public static final Path CORPUS = Path.of("..", "..", "data", "corpus.txt").toAbsolutePath().normalize();

    private TrainingFixtures() {
    }

    public record Run(int exit, String output) {
    }

    /** {@code hspmn ARGS} in a new JVM with this test's classpath and library; stdout and stderr together. */
    public static Run cli(String... args) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.add("--enable-native-access=ALL-UNNAMED");
        String lib = System.getProperty("hspmn.library.path");
        if (lib != null) {
            cmd.add("-Dhspmn.library.path=" + lib);
        }
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add("io.hspmn.cli.Main");
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        byte[] out = p.getInputStream().readAllBytes();
        assertTrue(p.waitFor(300, TimeUnit.SECONDS), "hspmn " + String.join(" ", args) + " timed out");
        return new Run(p.exitValue(), new String(out, StandardCharsets.UTF_8));
    }
}
