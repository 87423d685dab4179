package io.hspmn.checkpoint;

import io.hspmn.HspmnConfig;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The language model's state_dict names and shapes (MODEL.md, "The language model"): {@code embedding}
 * [V, D], {@code blocks.{i}.<block parameter>} for each block, {@code norm} [D]. The block parameters
 * and their order are hspmn_ref.HSPMNBlock's (and hspmn_block_param_name's).
 */
public final class LanguageModelLayout {
    private LanguageModelLayout() {
    }

    /** The names and shapes of one block's parameters, in state_dict order. */
    public static Map<String, long[]> blockShapes(HspmnConfig c) {
        long d = c.dim();
        long f = c.hiddenDim();
        long kv = (long) c.numKvHeads() * c.headDim();
        Map<String, long[]> m = new LinkedHashMap<>();
        m.put("router.w", new long[] {d});
        m.put("router.b", new long[] {1});
        m.put("router.log_temp", new long[] {1});
        m.put("reflex.norm", new long[] {d});
        m.put("reflex.conv", new long[] {d, c.convKernel()});
        m.put("reflex.gate", new long[] {f, d});
        m.put("reflex.up", new long[] {f, d});
        m.put("reflex.down", new long[] {d, f});
        m.put("attn.norm", new long[] {d});
        m.put("attn.q", new long[] {d, d});
        m.put("attn.k", new long[] {kv, d});
        m.put("attn.v", new long[] {kv, d});
        m.put("attn.o", new long[] {d, d});
        return m;
    }

    /** The whole model's names and shapes, in state_dict order. */
    public static Map<String, long[]> shapes(HspmnConfig block, int vocabSize, int numLayers) {
        if (vocabSize <= 0 || numLayers < 0) {
            throw new IllegalArgumentException("vocab_size must be > 0 and num_layers >= 0, got " + vocabSize + ", " + numLayers);
        }
        Map<String, long[]> m = new LinkedHashMap<>();
        m.put("embedding", new long[] {vocabSize, block.dim()});
        Map<String, long[]> b = blockShapes(block);
        for (int i = 0; i < numLayers; i++) {
            for (Map.Entry<String, long[]> e : b.entrySet()) {
                m.put("blocks." + i + "." + e.getKey(), e.getValue().clone());
            }
        }
        m.put("norm", new long[] {block.dim()});
        return m;
    }
}
