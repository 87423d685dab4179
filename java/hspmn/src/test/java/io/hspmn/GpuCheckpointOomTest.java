package io.hspmn;

import io.hspmn.checkpoint.Checkpoint;
import io.hspmn.checkpoint.ModelCheckpoint;
import io.hspmn.io.TensorData;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Loading a checkpoint onto a CUDA device that is full (issue 11: GPU faults). Checkpoints are read
 * in Java and loaded as the serve and sample commands do (LanguageModel.create, then
 * ModelCheckpoint.restore: a device tensor per weight and hspmn_model_set_param). With every byte of
 * device memory the library will hand out taken by tensors of the same context, creating the model
 * and restoring the weights into one made before both throw NativeOutOfMemoryException (the process
 * and the context live); once those tensors are freed the same calls on the same context load the
 * checkpoint exactly. Tagged gpu: skipped without CUDA, failing instead under {@code -Pgpu}.
 */
@Tag("gpu")
class GpuCheckpointOomTest {
    static final ModelConfig CONFIG = new ModelConfig(256, 2, HspmnConfig.builder().dim(256).numHeads(4).numKvHeads(2)
            .mlpRatio(2).routing(Routing.THRESHOLD).build());

    @Test
    void checkpointLoadOnAFullDeviceFailsThenSucceeds(@TempDir Path dir) throws Exception {
        GpuAssumptions.requireCuda();
        Path file = dir.resolve("ckpt.safetensors");
        try (Context ctx = Context.create(Backend.CUDA);
             LanguageModel src = LanguageModel.create(ctx, CONFIG, 3);
             LanguageModel target = LanguageModel.create(ctx, CONFIG, 4)) {
            Map<String, TensorData> weights = new LinkedHashMap<>();
            for (String name : src.paramNames()) {
                weights.put(name, TensorData.f32(src.paramShape(name), src.param(name)));
            }
            new Checkpoint(CONFIG.toJson(), 0, 0, new long[] {0L}, weights, Map.of(), Map.of()).save(file);
            Checkpoint ckpt = Checkpoint.load(file);

            List<Tensor> fill = fill(ctx);
            try {
                NativeOutOfMemoryException create = assertThrows(NativeOutOfMemoryException.class,
                        () -> LanguageModel.create(ctx, CONFIG, 5));
                assertTrue(create.nativeMessage().contains("bytes"), create.nativeMessage());
                NativeOutOfMemoryException restore = assertThrows(NativeOutOfMemoryException.class,
                        () -> ModelCheckpoint.restore(ckpt, target, false));
                assertTrue(restore.nativeMessage().contains("bytes"), restore.nativeMessage());
            } finally {
                for (Tensor t : fill) {
                    t.close();
                }
            }

            ModelCheckpoint.restore(ckpt, target, false);
            for (String name : src.paramNames()) {
                assertArrayEquals(src.param(name), target.param(name), name);
            }
            try (LanguageModel created = LanguageModel.create(ctx, CONFIG, 5)) {
                ModelCheckpoint.restore(ckpt, created, false);
                int[] ids = new Random(1).ints(2 * 64, 0, 256).toArray();
                int[] next = new int[ids.length];
                for (int i = 0; i < ids.length; i++) {
                    next[i] = ids[(i + 1) % ids.length];
                }
                try (Tensor tokens = Tensor.ofInts(ctx, ids, 2, 64); Tensor targets = Tensor.ofInts(ctx, next, 2, 64)) {
                    float want = src.forward(tokens, targets, ModelForwardOptions.evaluation()).loss();
                    float got = created.forward(tokens, targets, ModelForwardOptions.evaluation()).loss();
                    assertTrue(Float.isFinite(want), "loss " + want);
                    assertEquals(want, got, 0f, "the loaded model's loss");
                }
            }
        }
    }

    /** Device tensors of the context until the library refuses even 64 KiB: under 64 KiB stay free. */
    private static List<Tensor> fill(Context ctx) {
        List<Tensor> held = new ArrayList<>();
        long elements = 1L << 28; // 1 GiB of f32
        while (elements >= 1L << 14) {
            try {
                held.add(Tensor.create(ctx, DType.F32, MemoryKind.DEVICE, elements));
            } catch (NativeOutOfMemoryException e) {
                elements /= 2;
            }
        }
        assertTrue(held.size() > 0, "the fill took device memory");
        return held;
    }
}
