package io.hspmn;

import java.util.Arrays;

/**
 * What {@link Block#route} computed.
 *
 * @param logits  [B * S] router logits l, row-major
 * @param probs   [B * S] p = sigmoid(l)
 * @param indices per sequence, the selected positions in increasing order (only the selected ones)
 * @param counts  [B] number selected per sequence
 * @param aux     aux loss
 */
public record RouteResult(float[] logits, float[] probs, int[][] indices, int[] counts, float aux) {

    public int batch() {
        return counts.length;
    }

    public int seqLen() {
        return counts.length == 0 ? 0 : logits.length / counts.length;
    }

    /** Mean over sequences of counts / S: the fraction of tokens routed to attention. */
    public double routedFraction() {
        if (counts.length == 0) {
            return 0;
        }
        long sum = 0;
        for (int c : counts) {
            sum += c;
        }
        return (double) sum / ((double) counts.length * seqLen());
    }

    @Override
    public String toString() {
        return "RouteResult[B=" + batch() + ", S=" + seqLen() + ", counts=" + Arrays.toString(counts)
                + ", aux=" + aux + "]";
    }
}
