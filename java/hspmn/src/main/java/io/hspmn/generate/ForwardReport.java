package io.hspmn.generate;

/**
 * What a full inference forward over a sequence reports besides logits.
 *
 * @param crossEntropy   mean next-token cross-entropy over the sequence, nats (NaN for one token)
 * @param aux            each layer's router aux loss
 * @param routedFraction each layer's share of the sequence's tokens its router sent through attention
 * @param selected       per layer, the positions its router selected in increasing order, or null when the
 *                       engine cannot tell (RecomputeEngine: hspmn_model_forward reports only the fraction)
 */
public record ForwardReport(double crossEntropy, float[] aux, float[] routedFraction, int[][] selected) {
    public ForwardReport {
        aux = aux.clone();
        routedFraction = routedFraction.clone();
        if (aux.length != routedFraction.length) {
            throw new IllegalArgumentException("aux has " + aux.length + " layers, routedFraction " + routedFraction.length);
        }
    }

    @Override
    public float[] aux() {
        return aux.clone();
    }

    @Override
    public float[] routedFraction() {
        return routedFraction.clone();
    }

    public int numLayers() {
        return aux.length;
    }
}
