package io.hspmn.generate;

/** Why a generation ended. */
public enum FinishReason {
    /** max_new_tokens reached. */
    LENGTH("length"),
    /** the output ended with a stop sequence (which is not part of it). */
    STOP("stop"),
    /** the sequence reached the engine's maximum length. */
    CONTEXT("context"),
    /** cancel(), an interrupted consumer, a closed session or a closed engine. */
    CANCELLED("cancelled"),
    /** the engine or a listener failed; {@link GenerationResult#error()} says how. */
    ERROR("error");

    private final String jsonName;

    FinishReason(String jsonName) {
        this.jsonName = jsonName;
    }

    public String jsonName() {
        return jsonName;
    }
}
