package io.hspmn.generate;

/**
 * A finished generation.
 *
 * @param finishReason      why it ended
 * @param tokens            the generated tokens (prompt excluded, a matched stop sequence excluded)
 * @param logprobs          each token's log-probability if the request asked for them, else null
 * @param promptTokens      prompt length
 * @param queuedNanos       from submission to the start of its prefill
 * @param firstTokenNanos   from submission to its first token (-1 if none)
 * @param totalNanos        from submission to the end
 * @param error             what failed when finishReason is ERROR, else null
 */
public record GenerationResult(FinishReason finishReason, int[] tokens, float[] logprobs, int promptTokens,
                               long queuedNanos, long firstTokenNanos, long totalNanos, Throwable error) {
    public GenerationResult {
        tokens = tokens.clone();
        logprobs = logprobs == null ? null : logprobs.clone();
    }

    @Override
    public int[] tokens() {
        return tokens.clone();
    }

    @Override
    public float[] logprobs() {
        return logprobs == null ? null : logprobs.clone();
    }

    public int generatedTokens() {
        return tokens.length;
    }

    /** Generated tokens per second after the first one (0 when fewer than two). */
    public double decodeTokensPerSecond() {
        if (tokens.length < 2 || firstTokenNanos < 0 || totalNanos <= firstTokenNanos) {
            return 0;
        }
        return (tokens.length - 1) * 1e9 / (totalNanos - firstTokenNanos);
    }
}
