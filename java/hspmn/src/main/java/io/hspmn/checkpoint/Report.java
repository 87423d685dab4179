package io.hspmn.checkpoint;

import java.util.List;

/**
 * What {@link CheckpointVerifier} found: {@code ok()} when there are no problems; each problem is a
 * sentence naming the tensor or field and the reason. {@code notes} describe what was checked.
 */
public record Report(String source, List<String> problems, List<String> notes) {
    public Report {
        problems = List.copyOf(problems);
        notes = List.copyOf(notes);
    }

    public boolean ok() {
        return problems.isEmpty();
    }

    /** The first problem, or null when ok. */
    public String firstProblem() {
        return problems.isEmpty() ? null : problems.getFirst();
    }

    /** Human-readable, one line per problem or note, ending with OK or INVALID. */
    public String render() {
        StringBuilder b = new StringBuilder("verify ").append(source).append('\n');
        for (String n : notes) {
            b.append("  ").append(n).append('\n');
        }
        for (String p : problems) {
            b.append("  PROBLEM: ").append(p).append('\n');
        }
        b.append(ok() ? "OK" : "INVALID (" + problems.size() + " problem" + (problems.size() == 1 ? "" : "s") + ")");
        return b.append('\n').toString();
    }

    @Override
    public String toString() {
        return render();
    }
}
