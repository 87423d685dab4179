/**
 * HSPMN for the JVM: a thin layer over libhspmn's C ABI (the generated bindings are in {@code io.hspmn.ffi}).
 *
 * <h2>Lifetimes</h2>
 * {@link io.hspmn.Context}, {@link io.hspmn.Tensor}, {@link io.hspmn.Block} and {@link io.hspmn.LanguageModel}
 * own native memory and are {@link java.lang.AutoCloseable}; close them (try-with-resources). Closing a context
 * closes every graph, block, model and tensor still open from it. Using a closed object throws {@link java.lang.IllegalStateException}
 * naming it; a {@link io.hspmn.Tensor#segment()} view taken before the tensor was closed throws too, instead
 * of reading freed memory. A {@link io.hspmn.ForwardGraph} (CUDA graph of a forward) holds its block and
 * tensors: closing one of them while the graph is open fails with {@link io.hspmn.HspmnStateException}.
 *
 * <h2>Threads</h2>
 * A context and everything made from it may be used by one thread at a time; handing them from one thread to
 * another between calls is fine, and different contexts are independent. This is enforced, not just advised:
 * every call takes the context's lock with {@code tryLock}, so a call made while another thread is inside the
 * same context fails at once with {@link io.hspmn.ConcurrentUseException} and changes nothing. The native
 * library enforces the same rule (status BUSY), which surfaces as the same exception.
 *
 * <h2>Errors</h2>
 * A native status other than OK becomes a typed {@link io.hspmn.HspmnException} carrying the status and the
 * library's message ({@code hspmn_last_error()}, read on the calling thread right after the call). NaN/Inf
 * inputs fail with {@link io.hspmn.NonFiniteInputException} under {@link io.hspmn.NanPolicy#REJECT} (the
 * default); under {@link io.hspmn.NanPolicy#PROPAGATE} they are not scanned and give NaN/Inf outputs.
 *
 * <h2>Loading</h2>
 * See {@link io.hspmn.NativeLibrary}. Run the JVM with {@code --enable-native-access=ALL-UNNAMED}.
 */
package io.hspmn;
