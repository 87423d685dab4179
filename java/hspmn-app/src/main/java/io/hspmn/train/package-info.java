/**
 * Training a byte-level HSPMN language model: {@link io.hspmn.train.TrainOptions} (every option once, for the
 * command line, the checkpoint and resume), {@link io.hspmn.train.Schedules} (learning rate and aux target, as
 * native/reference/hspmn_lm.py), {@link io.hspmn.train.TrainCheckpoint} (a run's state as an
 * {@link io.hspmn.checkpoint.Checkpoint}) and {@link io.hspmn.train.Trainer} (the loop, validation, metrics,
 * report and bit-exact resume).
 */
package io.hspmn.train;
