package io.hspmn;

/** The tests' float64 oracle for a model's cross-entropy: log softmax(logits)[target], max-subtracted. */
public final class LogSoftmax {
    private LogSoftmax() {
    }

    public static double of(float[] logits, int target) {
        double max = Double.NEGATIVE_INFINITY;
        for (float v : logits) {
            max = Math.max(max, v);
        }
        double sum = 0;
        for (float v : logits) {
            sum += Math.exp(v - max);
        }
        return logits[target] - max - Math.log(sum);
    }
}
