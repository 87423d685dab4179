package io.hspmn;

import org.junit.jupiter.api.Assumptions;

import static org.junit.jupiter.api.Assertions.fail;

/** The gate of every gpu-tagged test: skip with the reason on a machine without CUDA, fail when a GPU run was asked for. */
final class GpuAssumptions {
    private GpuAssumptions() {
    }

    static void requireCuda() {
        boolean required = Boolean.getBoolean("hspmn.test.requireGpu");
        String why = null;
        if (!Hspmn.backendBuilt(Backend.CUDA)) {
            why = "the CUDA backend is not compiled into " + NativeLibrary.source();
        } else {
            try (Context ctx = Context.create(Backend.CUDA)) {
                // constructed only to see that a device is usable
            } catch (BackendUnavailableException e) {
                why = "no usable CUDA device: " + e.getMessage();
            }
        }
        if (why != null) {
            if (required) {
                fail("a GPU run was asked for (-Pgpu) but " + why);
            }
            Assumptions.abort(why);
        }
    }
}
