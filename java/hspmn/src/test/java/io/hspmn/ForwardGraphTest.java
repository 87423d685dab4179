package io.hspmn;

import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Block.captureForward on the CPU backend, which has no graphs: every misuse is refused with a typed
 * exception before or by the library, and nothing is left bound. The CUDA path is GpuForwardGraphTest.
 */
class ForwardGraphTest extends GraphFixture {
    static final int S = 12, D = 32;

    @BeforeEach
    void setUp() {
        open(cpuContext(), S, D, 5,
                MemoryKind.HOST, 3);
    }

    @Test
    void cpuContextHasNoGraphs() {
        InvalidArgumentException e = assertThrows(InvalidArgumentException.class,
                () -> block.captureForward(x, out, aux, ForwardOptions.inference()));
        assertEquals(Status.INVALID_ARGUMENT, e.status());
        assertTrue(e.nativeMessage().contains("graph capture needs the CUDA backend"), e.getMessage());
        assertTrue(e.getMessage().startsWith("hspmn_graph_capture_forward failed"), e.getMessage());
        // aux is optional; the answer is the same
        assertThrows(InvalidArgumentException.class, () -> block.captureForward(x, out, null, ForwardOptions.inference()));
        // nothing was bound: the tensors and the block still close, and so does the context (tearDown)
        x.close();
        out.close();
        block.close();
        assertTrue(x.isClosed() && out.isClosed() && block.isClosed());
    }

    @Test
    void argumentsAreCheckedBeforeTheBackend() {
        InvalidArgumentException training = assertThrows(InvalidArgumentException.class,
                () -> block.captureForward(x, out, aux, ForwardOptions.training(1, 0, 0)));
        assertTrue(training.nativeMessage().contains("params.training must be 0"), training.getMessage());
        Tensor wrong = Tensor.create(ctx, DType.BF16, B, S + 1, D);
        InvalidArgumentException shape = assertThrows(InvalidArgumentException.class,
                () -> block.captureForward(x, wrong, aux, ForwardOptions.inference()));
        assertEquals(Status.SHAPE, shape.status());
        assertTrue(shape.nativeMessage().contains("out: expected shape [2, 12, 32]"), shape.getMessage());
        Tensor f32 = Tensor.create(ctx, DType.F32, B, S, D);
        InvalidArgumentException dtype = assertThrows(InvalidArgumentException.class,
                () -> block.captureForward(f32, out, aux, ForwardOptions.inference()));
        assertEquals(Status.DTYPE, dtype.status());
        try (Context other = Context.create(Backend.CPU)) {
            Tensor foreign = Tensor.create(other, DType.BF16, B, S, D);
            assertThrows(InvalidArgumentException.class,
                    () -> block.captureForward(foreign, out, aux, ForwardOptions.inference()));
        }
    }

    @Test
    void nullAndClosedArguments() {
        assertThrows(NullPointerException.class, () -> block.captureForward(null, out, aux, ForwardOptions.inference()));
        assertThrows(NullPointerException.class, () -> block.captureForward(x, null, aux, ForwardOptions.inference()));
        assertThrows(NullPointerException.class, () -> block.captureForward(x, out, aux, null));
        aux.close();
        IllegalStateException closedAux = assertThrows(IllegalStateException.class,
                () -> block.captureForward(x, out, aux, ForwardOptions.inference()));
        assertTrue(closedAux.getMessage().contains("aux"), closedAux.getMessage());
        x.close();
        assertThrows(IllegalStateException.class, () -> block.captureForward(x, out, null, ForwardOptions.inference()));
        Tensor x2 = Tensor.create(ctx, DType.BF16, B, S, D);
        block.close();
        IllegalStateException closedBlock = assertThrows(IllegalStateException.class,
                () -> block.captureForward(x2, out, null, ForwardOptions.inference()));
        assertTrue(closedBlock.getMessage().contains("Block.captureForward"), closedBlock.getMessage());
        assertFalse(out.isClosed());
    }
}
