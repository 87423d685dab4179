package io.hspmn.generate;

/**
 * Receives a generation's tokens as they are decided. Called on the thread that runs the decode loop (the
 * {@link Engine}'s worker): keep it short and never block in it, or every sequence in the batch waits.
 * An exception thrown here ends this generation with {@link FinishReason#ERROR}; the others go on.
 */
public interface GenerationListener {
    /**
     * One more token of output.
     *
     * @param index   0-based position in the output
     * @param token   the token id
     * @param logprob its log-probability if the request asked for them, else NaN
     */
    void onToken(int index, int token, float logprob);

    /** The end, once, after the last {@link #onToken}. */
    default void onFinish(GenerationResult result) {
    }
}
