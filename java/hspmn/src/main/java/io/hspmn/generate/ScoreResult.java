package io.hspmn.generate;

/**
 * The model's view of a given text.
 *
 * @param tokens   the text's token ids
 * @param logprobs logprobs[i] = log p(tokens[i+1] | tokens[0..i]), natural log, as a decoder sees it (each
 *                 position from its prefix alone); one fewer than tokens (the first token has no context)
 * @param report   the full forward over the whole text: its mean cross-entropy and each layer's routing
 * @param nanos    time from submission to the result
 */
public record ScoreResult(int[] tokens, float[] logprobs, ForwardReport report, long nanos) {
    public ScoreResult {
        tokens = tokens.clone();
        logprobs = logprobs.clone();
    }

    @Override
    public int[] tokens() {
        return tokens.clone();
    }

    @Override
    public float[] logprobs() {
        return logprobs.clone();
    }

    /** Sum of the log-probabilities, nats. */
    public double totalLogProb() {
        double s = 0;
        for (float v : logprobs) {
            s += v;
        }
        return s;
    }

    /** Mean negative log-likelihood per predicted token, nats (NaN for a one-token text). */
    public double meanNll() {
        return logprobs.length == 0 ? Double.NaN : -totalLogProb() / logprobs.length;
    }
}
