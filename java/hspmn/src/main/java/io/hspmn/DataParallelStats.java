package io.hspmn;

/**
 * What a model's communicator did ({@code hspmn_data_parallel_stats}, {@link LanguageModel#dataParallelStats}).
 *
 * @param backwards    backward calls since the communicator was attached
 * @param buckets      all-reduce buckets per backward
 * @param bytes        gradient bytes averaged per backward
 * @param allReduceMs  the last backward: time its buckets' all-reduces took (NCCL: on the communication
 *                     stream; LOCAL: on the host, while backward waited)
 * @param overlappedMs the part of allReduceMs during which the backward still ran (LOCAL: 0)
 */
public record DataParallelStats(long backwards, long buckets, long bytes, double allReduceMs, double overlappedMs) {
    /** overlappedMs / allReduceMs: the share of the all-reduce hidden behind the backward (0 when none ran). */
    public double overlapFraction() {
        return allReduceMs > 0 ? overlappedMs / allReduceMs : 0;
    }
}
