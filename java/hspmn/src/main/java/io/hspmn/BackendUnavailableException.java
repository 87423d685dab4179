package io.hspmn;

/** The backend was not compiled into the library (NOT_BUILT) or no usable device was found (NO_DEVICE). */
public class BackendUnavailableException extends HspmnException {
    public BackendUnavailableException(Status status, String message, String nativeMessage) {
        super(status, message, nativeMessage);
    }
}
