package io.hspmn;

/**
 * What {@link LanguageModel#forward} reports.
 *
 * @param loss           mean next-token cross-entropy (nats) plus the sum of the layers' aux losses
 * @param crossEntropy   mean next-token cross-entropy alone, nats
 * @param aux            each layer's aux loss
 * @param routedFraction each layer's selected tokens / (B * S)
 */
public record LossResult(float loss, float crossEntropy, float[] aux, float[] routedFraction) {
    public LossResult {
        aux = aux.clone();
        routedFraction = routedFraction.clone();
    }

    @Override
    public float[] aux() {
        return aux.clone();
    }

    @Override
    public float[] routedFraction() {
        return routedFraction.clone();
    }

    /** The cross-entropy in bits: bits per byte for a byte-level model. */
    public double bitsPerToken() {
        return crossEntropy / Math.log(2);
    }

    public int numLayers() {
        return aux.length;
    }
}
