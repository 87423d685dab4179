package io.hspmn.generate;

/**
 * How the next token is chosen from the logits.
 *
 * @param temperature 0 picks the most likely token (greedy, ties to the lowest id); above 0 the logits are
 *                    divided by it before the softmax. 0 or in [{@link Float#MIN_NORMAL}, {@value #MAX_TEMPERATURE}]
 *                    (a subnormal temperature would make 1 / T infinite).
 * @param topK        keep only the k most likely tokens (0: all). k >= vocabulary size keeps all.
 * @param topP        keep the smallest set of most likely tokens whose probability reaches p (nucleus),
 *                    in (0, 1]; 1 keeps all. Applied after top-k, on the temperature-scaled distribution.
 * @param seed        the random stream: the same seed, params and logits give the same tokens
 */
public record SamplingParams(float temperature, int topK, float topP, long seed) {
    public static final float MAX_TEMPERATURE = 100f;

    public SamplingParams {
        if (!(temperature == 0f || temperature >= Float.MIN_NORMAL && temperature <= MAX_TEMPERATURE)) {
            throw new IllegalArgumentException("temperature (" + temperature + ") must be 0 (greedy) or in ["
                    + Float.MIN_NORMAL + ", " + MAX_TEMPERATURE + "]");
        }
        if (topK < 0) {
            throw new IllegalArgumentException("top_k (" + topK + ") must be >= 0 (0: no limit)");
        }
        if (!(topP > 0f && topP <= 1f)) {
            throw new IllegalArgumentException("top_p (" + topP + ") must be in (0, 1]");
        }
    }

    /** The most likely token each step. */
    public static SamplingParams greedy() {
        return new SamplingParams(0f, 0, 1f, 0L);
    }

    /** Plain sampling from softmax(logits / temperature). */
    public static SamplingParams temperature(float temperature, long seed) {
        return new SamplingParams(temperature, 0, 1f, seed);
    }

    public SamplingParams withTopK(int k) {
        return new SamplingParams(temperature, k, topP, seed);
    }

    public SamplingParams withTopP(float p) {
        return new SamplingParams(temperature, topK, p, seed);
    }

    public SamplingParams withSeed(long s) {
        return new SamplingParams(temperature, topK, topP, s);
    }

    public boolean isGreedy() {
        return temperature == 0f;
    }
}
