package io.hspmn.train;

/**
 * A run stopped because {@code --max-skipped} consecutive steps had a non-finite gradient norm: the updates
 * were skipped, the weights are as the last applied step left them, and no checkpoint was written from the
 * diverging state (the one in {@code --out}, if any, is the last written before the skips began).
 */
public final class TrainingDivergedException extends RuntimeException {
    private final long step;
    private final long skipped;

    TrainingDivergedException(String message, long step, long skipped) {
        super(message);
        this.step = step;
        this.skipped = skipped;
    }

    /** The step the run stopped at. */
    public long step() {
        return step;
    }

    /** The consecutive skipped steps that stopped it. */
    public long skipped() {
        return skipped;
    }
}
