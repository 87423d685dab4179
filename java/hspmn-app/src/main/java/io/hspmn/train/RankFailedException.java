package io.hspmn.train;

/**
 * A rank of a data-parallel run failed: the trainer aborted the communicator so that every other rank
 * stopped too (their communicator errors are attached as suppressed exceptions), instead of waiting for
 * the failed one. The cause is the failed rank's own exception.
 */
public final class RankFailedException extends RuntimeException {
    private final int rank;

    RankFailedException(int rank, int world, Throwable cause) {
        super("rank " + rank + " of " + world + " failed: " + describe(cause) + "; every rank was stopped", cause);
        this.rank = rank;
    }

    /** The global rank that failed first. */
    public int rank() {
        return rank;
    }

    private static String describe(Throwable t) {
        String m = t.getMessage();
        return t.getClass().getSimpleName() + (m == null || m.isEmpty() ? "" : ": " + m);
    }
}
