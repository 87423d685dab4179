package io.hspmn.generate;

import java.util.List;

/**
 * Finds stop sequences at the end of generated tokens. A stop sequence is not part of the output, so a
 * token that could begin one is held back until the following tokens rule it out; {@link #holdBack} says
 * how many of the newest tokens must wait.
 */
final class StopMatcher {
    private final int[][] stops;

    StopMatcher(List<int[]> stops) {
        this.stops = stops.toArray(new int[0][]);
    }

    boolean isEmpty() {
        return stops.length == 0;
    }

    /** The length of a stop sequence that {@code tokens[0..n)} ends with, or 0 when none does. */
    int matchedLength(int[] tokens, int n) {
        for (int[] s : stops) {
            if (s.length <= n && endsWith(tokens, n, s, s.length)) {
                return s.length;
            }
        }
        return 0;
    }

    /** The longest proper prefix of a stop sequence that {@code tokens[0..n)} ends with (0 if none). */
    int holdBack(int[] tokens, int n) {
        int best = 0;
        for (int[] s : stops) {
            for (int len = Math.min(s.length - 1, n); len > best; len--) {
                if (endsWith(tokens, n, s, len)) {
                    best = len;
                    break;
                }
            }
        }
        return best;
    }

    private static boolean endsWith(int[] tokens, int n, int[] s, int len) {
        for (int j = 0; j < len; j++) {
            if (tokens[n - len + j] != s[j]) {
                return false;
            }
        }
        return true;
    }
}
