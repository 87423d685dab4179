package io.hspmn;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** The forward that leaves aux in a caller's tensor computes what the aux-returning forward computes. */
class ForwardIntoTest {
    @Test
    void auxLandsInTheGivenTensorOrIsDropped() {
        HspmnConfig cfg = HspmnConfig.builder().dim(32).numHeads(2).numKvHeads(1).mlpRatio(2).sparsityK(0.25f).build();
        try (Context ctx = Context.create(Backend.CPU)) {
            Block block = Block.create(ctx, cfg, 3);
            Tensor x = Tensor.of(ctx, DType.BF16, BadInputTest.gaussian(2 * 9 * 32, 5), 2, 9, 32);
            Tensor out1 = Tensor.create(ctx, DType.BF16, 2, 9, 32);
            Tensor out2 = Tensor.create(ctx, DType.BF16, 2, 9, 32);
            Tensor out3 = Tensor.create(ctx, DType.BF16, 2, 9, 32);
            Tensor aux = Tensor.create(ctx, DType.F32, 1);
            float expected = block.forward(x, out1, ForwardOptions.inference());
            block.forward(x, out2, aux, ForwardOptions.inference());
            block.forward(x, out3, null, ForwardOptions.inference());
            assertEquals(expected, aux.toFloatArray()[0]);
            assertArrayEquals(out1.toFloatArray(), out2.toFloatArray());
            assertArrayEquals(out1.toFloatArray(), out3.toFloatArray());
            Tensor wrong = Tensor.create(ctx, DType.BF16, 1);
            assertThrows(InvalidArgumentException.class, () -> block.forward(x, out2, wrong, ForwardOptions.inference()));
        }
    }
}
