/**
 * The one command-line parser of the applications ({@link io.hspmn.args.CommandLine}): {@code hspmn}'s commands,
 * {@code Bench}, {@code hspmn serve}'s options and {@code LoadClient} read their options through it. It depends
 * on no other package of the applications, so each of them can use it.
 */
package io.hspmn.args;
