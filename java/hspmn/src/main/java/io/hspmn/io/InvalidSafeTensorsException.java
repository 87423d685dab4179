package io.hspmn.io;

import java.io.IOException;

/**
 * A file that is not a well-formed safetensors file; the message is the reason, fit for a report.
 * An IOException because a corrupt file is an input problem of the same kind as an unreadable one.
 */
public final class InvalidSafeTensorsException extends IOException {
    public InvalidSafeTensorsException(String reason) {
        super(reason);
    }
}
