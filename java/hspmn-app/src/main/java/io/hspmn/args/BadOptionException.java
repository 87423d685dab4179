package io.hspmn.args;

/**
 * A command line the user got wrong (an unknown option, a missing or malformed value): the program prints the
 * message, without a stack trace, and exits with its usage status.
 */
public final class BadOptionException extends IllegalArgumentException {
    public BadOptionException(String message) {
        super(message);
    }
}
