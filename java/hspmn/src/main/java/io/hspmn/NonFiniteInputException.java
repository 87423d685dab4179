package io.hspmn;

/** NaN or Inf in an input scanned under {@link NanPolicy#REJECT}; the message names the first bad element. */
public class NonFiniteInputException extends HspmnException {
    public NonFiniteInputException(String message, String nativeMessage) {
        super(Status.NON_FINITE, message, nativeMessage);
    }
}
