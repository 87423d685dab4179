package io.hspmn;

/** Process-wide counters of the library ({@code hspmn_alloc_stats}): what is alive now, and the peak. */
public record AllocStats(long liveTensors, long liveBlocks, long liveContexts, long liveBytes, long peakBytes) {
}
