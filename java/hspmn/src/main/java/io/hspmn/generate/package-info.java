/**
 * Generation with an HSPMN language model: sampling, stop conditions, batching and threads above a
 * swappable {@link io.hspmn.generate.DecodeEngine}.
 *
 * <ul>
 *   <li>{@link io.hspmn.generate.DecodeEngine}: prefill a prompt (at once or in pieces), step many
 *       sequences by one token each, release; ids and logits as off-heap memory.
 *       {@link io.hspmn.generate.CachedEngine} (native K/V cache, threshold routing; samples each next
 *       token on the backend, so a step returns ids) and {@link io.hspmn.generate.RecomputeEngine}
 *       (whole prefix per step, any routing); {@link io.hspmn.generate.Models#engine} chooses.</li>
 *   <li>{@link io.hspmn.generate.Sampler} under {@link io.hspmn.generate.SamplingParams}: greedy,
 *       temperature, top-k, top-p; a seed reproduces its tokens on any JVM, and the native op
 *       {@link io.hspmn.Hspmn#sample} gives the same tokens on the CPU and CUDA backends.</li>
 *   <li>{@link io.hspmn.generate.Generator}: the batched decode loop, single-threaded, with continuous
 *       batching: new prompts are prefilled in pieces of at most a chunk of tokens between decode steps.</li>
 *   <li>{@link io.hspmn.generate.Engine}: the thread-safe front; one worker thread owns the engine (and
 *       the native context, which allows one thread at a time) and runs the loop; bounded admission.</li>
 *   <li>{@link io.hspmn.generate.GenerationSession}: a generation in flight (iterator, listener,
 *       cancel, await); {@link io.hspmn.generate.ScoreResult}: a text's per-token log-likelihood and
 *       routing.</li>
 * </ul>
 */
package io.hspmn.generate;
