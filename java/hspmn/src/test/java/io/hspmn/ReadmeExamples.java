package io.hspmn;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The README's Java examples are the lines between the markers {@code // README begin} and
 * {@code // README end} of a test's own source, so the docs cannot drift from the API.
 */
final class ReadmeExamples {
    private static final String BEGIN = "// README begin\n";
    private static final String END = "            // README end";

    private ReadmeExamples() {
    }

    /** Asserts README.md shows the lines between the markers of {@code test}'s source, as one ```java block. */
    static void assertReadmeShows(Class<?> test) throws IOException {
        // the repository root is three levels above native/include/hspmn.h, wherever the tests run from
        Path root = Path.of(System.getProperty("hspmn.test.header", "../../native/include/hspmn.h"))
                .toAbsolutePath().getParent().getParent().getParent();
        String self = Files.readString(source(root, test));
        String readme = Files.readString(root.resolve("README.md"));
        String body = self.substring(self.indexOf(BEGIN) + BEGIN.length(), self.indexOf(END));
        StringBuilder expected = new StringBuilder("```java\n");
        for (String line : body.split("\n")) {
            expected.append(line.startsWith("        ") ? line.substring(8) : line).append('\n');
        }
        expected.append("}\n```");
        assertTrue(readme.contains(expected), "README.md's example differs from " + test.getSimpleName() + ":\n" + expected);
    }

    /** The test's source file, wherever under java/ its module keeps it. */
    private static Path source(Path root, Class<?> test) throws IOException {
        String tail = "src/test/java/" + test.getName().replace('.', '/') + ".java";
        try (Stream<Path> files = Files.walk(root.resolve("java"))) {
            var found = files.filter(p -> p.toString().replace('\\', '/').endsWith(tail)).toList();
            assertEquals(1, found.size(), "the source of " + test.getName() + " under java/: " + found);
            return found.get(0);
        }
    }
}
