package io.hspmn.train;

import io.hspmn.Backend;
import io.hspmn.Communicator;
import io.hspmn.Context;
import io.hspmn.DType;
import io.hspmn.LanguageModel;
import io.hspmn.MemoryKind;
import io.hspmn.Tensor;
import io.hspmn.data.BatchSampler;
import io.hspmn.data.CorpusSplit;

import java.lang.foreign.MemorySegment;

/**
 * One rank of a training run in this process: its context (on CUDA, device = local rank), its replica of
 * the model, its communicator (null for a run of one rank without one), its batch buffers and samplers,
 * and the loop's state. Every rank keeps the same state (same step, same skipped steps, same decisions):
 * the collectives of the model and the communicator make their numbers agree, so each decides alike.
 * Used by one thread at a time (its own during {@link Trainer#run()}).
 */
final class Rank {
    final int local;   // index in this process, the CUDA device
    final int global;  // index in the run: node rank x gpus + local
    final Context ctx;
    final LanguageModel model;
    Communicator comm;
    final BatchSampler sampler;            // draws the global batch; this rank keeps rows [first, first + batch)
    final BatchSampler validationSampler;  // the same, over the validation split
    final int first;
    final int batch;
    private final Tensor tokensStage;  // [B, S] i32, HOST (CPU) or PINNED (CUDA): the sampler writes here
    private final Tensor targetsStage;
    final Tensor tokens;               // what the model reads: the stage itself on the CPU, DEVICE copies on CUDA
    final Tensor targets;
    private final MemorySegment tokensView;
    private final MemorySegment targetsView;

    long step;
    long skipped;
    long streak;              // consecutive skipped steps up to now
    long lastSaved = -1;      // the step of the last checkpoint this invocation wrote
    boolean lastStepSkipped;
    long windows;             // training windows drawn by the whole run (every rank), the checkpoint's data_position
    // the run's best validation (bits/byte) and its step: best.safetensors holds it (--keep-best), and
    // --early-stop counts validations from it
    double bestValidation = Double.POSITIVE_INFINITY;
    long bestStep;

    Rank(int local, int global, Context ctx, LanguageModel model, TrainOptions o, CorpusSplit train, CorpusSplit validation) {
        this.local = local;
        this.global = global;
        this.ctx = ctx;
        this.model = model;
        int globalBatch = Math.toIntExact(o.globalBatch());
        this.sampler = BatchSampler.shuffled(train, globalBatch, o.seqLen(), o.seed());
        this.validationSampler = BatchSampler.sequential(validation, globalBatch, o.seqLen());
        this.batch = o.batch();
        this.first = global * batch;
        boolean cuda = ctx.backend() == Backend.CUDA;
        MemoryKind stage = cuda ? MemoryKind.PINNED : MemoryKind.HOST;
        this.tokensStage = Tensor.create(ctx, DType.I32, stage, batch, o.seqLen());
        this.targetsStage = Tensor.create(ctx, DType.I32, stage, batch, o.seqLen());
        this.tokens = cuda ? Tensor.create(ctx, DType.I32, MemoryKind.DEVICE, batch, o.seqLen()) : tokensStage;
        this.targets = cuda ? Tensor.create(ctx, DType.I32, MemoryKind.DEVICE, batch, o.seqLen()) : targetsStage;
        this.tokensView = tokensStage.segment();
        this.targetsView = targetsStage.segment();
    }

    /** This rank's rows of the next training batch, in the tensors the model reads. */
    void nextTraining() {
        sampler.next(tokensView, targetsView, first, batch);
        upload();
    }

    /** This rank's rows of the next validation batch. */
    void nextValidation() {
        validationSampler.next(tokensView, targetsView, first, batch);
        upload();
    }

    private void upload() {
        if (tokens != tokensStage) {
            tokens.copyFrom(tokensStage);
            targets.copyFrom(targetsStage);
        }
    }

    /**
     * {@code values} averaged over the ranks, in place (unchanged without a communicator or with one of
     * a single rank, so a one-rank run logs what it always did). The doubles cross as a float pair each
     * (the value rounded, and what the rounding lost), summed apart, so the mean keeps about 48 bits.
     */
    void mean(double[] values) {
        if (comm == null || comm.world() == 1) {
            return;
        }
        int n = values.length;
        float[] pair = new float[2 * n];
        for (int i = 0; i < n; i++) {
            pair[i] = (float) values[i];
            pair[n + i] = (float) (values[i] - pair[i]);
        }
        comm.allReduce(pair, false);
        for (int i = 0; i < n; i++) {
            values[i] = ((double) pair[i] + pair[n + i]) / comm.world();
        }
    }

    @Override
    public String toString() {
        return "rank " + global + (comm == null ? "" : " of " + comm.world());
    }
}
