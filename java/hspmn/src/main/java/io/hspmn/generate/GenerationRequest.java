package io.hspmn.generate;

import java.util.ArrayList;
import java.util.List;
import java.util.Objects;

/**
 * What to generate: a prompt of token ids, how to sample, and when to stop.
 *
 * @param prompt        token ids, at least one (a byte-level model has no start token)
 * @param sampling      how each token is chosen
 * @param maxNewTokens  stop after this many generated tokens, >= 1
 * @param stopSequences stop when the output ends with one of these (each non-empty; at most
 *                      {@value #MAX_STOP_SEQUENCES}); the stop sequence itself is not part of the output
 * @param logprobs      report each generated token's log-probability under the model (temperature 1,
 *                      nothing cut); costs one pass over the logits per token
 */
public record GenerationRequest(int[] prompt, SamplingParams sampling, int maxNewTokens, List<int[]> stopSequences,
                                boolean logprobs) {
    public static final int MAX_STOP_SEQUENCES = 16;

    public GenerationRequest {
        Objects.requireNonNull(prompt, "prompt");
        Objects.requireNonNull(sampling, "sampling");
        Objects.requireNonNull(stopSequences, "stopSequences");
        if (prompt.length == 0) {
            throw new IllegalArgumentException("the prompt is empty: at least one token is needed");
        }
        for (int i = 0; i < prompt.length; i++) {
            if (prompt[i] < 0) {
                throw new IllegalArgumentException("prompt[" + i + "] = " + prompt[i] + " is not a token id");
            }
        }
        if (maxNewTokens < 1) {
            throw new IllegalArgumentException("max_new_tokens (" + maxNewTokens + ") must be >= 1");
        }
        if (stopSequences.size() > MAX_STOP_SEQUENCES) {
            throw new IllegalArgumentException(stopSequences.size() + " stop sequences, at most " + MAX_STOP_SEQUENCES);
        }
        List<int[]> copy = new ArrayList<>(stopSequences.size());
        for (int[] s : stopSequences) {
            if (s == null || s.length == 0) {
                throw new IllegalArgumentException("a stop sequence is empty");
            }
            copy.add(s.clone());
        }
        prompt = prompt.clone();
        stopSequences = List.copyOf(copy);
    }

    public static GenerationRequest of(int[] prompt, SamplingParams sampling, int maxNewTokens) {
        return new GenerationRequest(prompt, sampling, maxNewTokens, List.of(), false);
    }

    public GenerationRequest withStops(List<int[]> stops) {
        return new GenerationRequest(prompt, sampling, maxNewTokens, stops, logprobs);
    }

    public GenerationRequest withLogprobs(boolean on) {
        return new GenerationRequest(prompt, sampling, maxNewTokens, stopSequences, on);
    }

    @Override
    public int[] prompt() {
        return prompt.clone();
    }

    int promptLength() {
        return prompt.length;
    }

    int promptAt(int i) {
        return prompt[i];
    }

    int maxPromptId() {
        int m = 0;
        for (int v : prompt) {
            m = Math.max(m, v);
        }
        return m;
    }
}
