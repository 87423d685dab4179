/**
 * Training data, byte-level (vocabulary 256): {@link io.hspmn.data.ByteCorpus} maps and validates UTF-8
 * files, splits them into training and validation streams, and {@link io.hspmn.data.BatchSampler} draws
 * seeded, resumable [B, S+1] batches of next-byte windows.
 */
package io.hspmn.data;
