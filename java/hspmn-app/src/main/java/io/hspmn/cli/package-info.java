/**
 * The {@code hspmn} command line ({@link io.hspmn.cli.Main}, the jar's entry point): {@code train},
 * {@code verify}, {@code sample}, {@code demo}, {@code bench}. User errors exit with status 2 and one message.
 */
package io.hspmn.cli;
