package io.hspmn;

/** A call out of order (status STATE), such as backward without a training forward before it. */
public class HspmnStateException extends HspmnException {
    public HspmnStateException(String message, String nativeMessage) {
        super(Status.STATE, message, nativeMessage);
    }
}
