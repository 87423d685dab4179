package io.hspmn.data;

/**
 * A {@link BatchSampler}'s whole position, for checkpoints: with a counter-based generator the
 * random state is (seed, epoch, index) itself. The configuration fields let {@link BatchSampler#restore}
 * refuse a state taken from a different sampler rather than silently draw other batches.
 * A plain record, so Gson writes and reads it as is.
 *
 * @param epoch      passes completed over the split's windows
 * @param index      windows drawn in the current epoch
 * @param splitBytes size of the split the state was taken on
 */
public record SamplerState(long seed, boolean shuffled, int batchSize, int seqLen, long splitBytes, long epoch, long index) {
}
