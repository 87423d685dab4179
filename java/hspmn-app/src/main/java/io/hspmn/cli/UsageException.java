package io.hspmn.cli;

/** A command line the user got wrong: the CLI prints the message and exits with status 2, without a stack trace. */
final class UsageException extends Exception {
    UsageException(String message) {
        super(message);
    }
}
