package io.hspmn;

/**
 * A context (or a tensor or block made from it) was entered while another thread was inside it.
 * Raised by the Java lock before the native call, or from the native side's BUSY status.
 */
public class ConcurrentUseException extends HspmnException {
    public ConcurrentUseException(String message, String nativeMessage) {
        super(Status.BUSY, message, nativeMessage);
    }
}
