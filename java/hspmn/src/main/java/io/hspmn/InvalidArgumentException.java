package io.hspmn;

/** A bad argument: status INVALID_ARGUMENT, SHAPE, DTYPE, MEMORY_KIND or NOT_FOUND (unknown parameter name). */
public class InvalidArgumentException extends HspmnException {
    public InvalidArgumentException(Status status, String message, String nativeMessage) {
        super(status, message, nativeMessage);
    }

    /** Detected on the Java side before any native call. */
    public InvalidArgumentException(Status status, String message) {
        super(status, message, "");
    }
}
