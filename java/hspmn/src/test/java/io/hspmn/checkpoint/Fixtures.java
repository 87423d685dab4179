package io.hspmn.checkpoint;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import io.hspmn.BFloat16;
import io.hspmn.HspmnConfig;
import io.hspmn.io.TensorData;

import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SplittableRandom;

/** Small language-model checkpoints with seeded values, for the checkpoint tests. */
final class Fixtures {
    private Fixtures() {
    }

    static String lmConfig(int vocab, int layers, HspmnConfig block) {
        JsonObject o = new JsonObject();
        o.addProperty("vocab_size", vocab);
        o.addProperty("num_layers", layers);
        o.add("block", JsonParser.parseString(block.toJson()));
        return o.toString();
    }

    static HspmnConfig tinyBlock() {
        return HspmnConfig.builder().dim(8).numHeads(2).numKvHeads(1).mlpRatio(2).convKernel(3).build();
    }

    /** Weights in BF16 and AdamW moments in F32, all seeded; {@code withOptim} false leaves the moments out. */
    static Checkpoint lm(long seed, int vocab, int layers, HspmnConfig block, boolean withOptim) {
        SplittableRandom r = new SplittableRandom(seed);
        Map<String, TensorData> w = new LinkedHashMap<>();
        Map<String, TensorData> m = new LinkedHashMap<>();
        Map<String, TensorData> v = new LinkedHashMap<>();
        LanguageModelLayout.shapes(block, vocab, layers).forEach((name, shape) -> {
            int n = Math.toIntExact(TensorData.byteSize(io.hspmn.io.SafeTensors.DType.U8, shape));
            short[] bits = new short[n];
            float[] mv = new float[n];
            float[] vv = new float[n];
            for (int i = 0; i < n; i++) {
                bits[i] = BFloat16.fromFloat((float) r.nextGaussian() * 0.1f);
                mv[i] = (float) r.nextGaussian() * 1e-3f;
                vv[i] = (float) r.nextDouble() * 1e-6f;
            }
            w.put(name, TensorData.bf16(shape, bits));
            if (withOptim) {
                m.put(name, TensorData.f32(shape, mv));
                v.put(name, TensorData.f32(shape, vv));
            }
        });
        return new Checkpoint(lmConfig(vocab, layers, block), 1000 + seed, 123_456_789L * seed,
                new long[] {0x1234_5678_9abc_def0L ^ seed, seed * 7}, w, m, v);
    }
}
