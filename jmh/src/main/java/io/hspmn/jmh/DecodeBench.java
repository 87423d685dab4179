package io.hspmn.jmh;

import io.hspmn.generate.DecodeEngine;
import io.hspmn.generate.GenerationRequest;
import io.hspmn.generate.Generator;
import io.hspmn.generate.SamplingParams;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.State;

import java.lang.foreign.MemorySegment;

/**
 * What DecodeStepBench and CachedDecodeBench time a step on: {@link #batch} sequences opened on an engine for
 * the bare engine call (their next ids in {@link #ids}), and as many generator sessions that never finish for
 * {@link Generator#step()}. One state per benchmark thread.
 */
@State(Scope.Thread)
public abstract class DecodeBench extends NativeBench {
    @Param({"1", "8"})
    public int batch;

    Generator generator;
    DecodeEngine.Sequence[] seqs;
    MemorySegment ids;

    /** A benchmark's {@code sampling} parameter: greedy, temp, topk or topp. */
    static SamplingParams params(String name) {
        return switch (name) {
            case "greedy" -> SamplingParams.greedy();
            case "temp" -> SamplingParams.temperature(0.8f, 7);
            case "topk" -> new SamplingParams(0.8f, 40, 1f, 7);
            case "topp" -> new SamplingParams(0.8f, 0, 0.9f, 7);
            default -> throw new IllegalArgumentException(name);
        };
    }

    /** {@link #batch} sessions of {@code prompt}, session i sampling with seed i, none with a token limit. */
    void startSessions(int[] prompt, SamplingParams p) {
        for (int i = 0; i < batch; i++) {
            generator.start(GenerationRequest.of(prompt, p.withSeed(i), Integer.MAX_VALUE), null);
        }
    }
}
