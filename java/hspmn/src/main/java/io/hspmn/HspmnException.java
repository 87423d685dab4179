package io.hspmn;

/**
 * A native call returned a status other than OK. Carries the status and the message the library
 * gave through {@code hspmn_last_error()}, read on the calling thread right after the call.
 */
public class HspmnException extends RuntimeException {
    private final Status status;
    private final String nativeMessage;

    public HspmnException(Status status, String message, String nativeMessage) {
        super(message);
        this.status = status;
        this.nativeMessage = nativeMessage == null ? "" : nativeMessage;
    }

    public Status status() {
        return status;
    }

    /** The library's own message ("" when the failure was detected on the Java side). */
    public String nativeMessage() {
        return nativeMessage;
    }

    /** The typed exception for a failed call of {@code function}. */
    static HspmnException of(Status status, String function, String nativeMessage) {
        String msg = function + " failed: " + status + (nativeMessage.isEmpty() ? "" : ": " + nativeMessage);
        return switch (status) {
            case INVALID_ARGUMENT, SHAPE, DTYPE, MEMORY_KIND, NOT_FOUND ->
                new InvalidArgumentException(status, msg, nativeMessage);
            case NOT_BUILT, NO_DEVICE -> new BackendUnavailableException(status, msg, nativeMessage);
            case NON_FINITE -> new NonFiniteInputException(msg, nativeMessage);
            case BUSY -> new ConcurrentUseException(msg, nativeMessage);
            case STATE -> new HspmnStateException(msg, nativeMessage);
            case OUT_OF_MEMORY -> new NativeOutOfMemoryException(msg, nativeMessage);
            case DEVICE_LOST -> new DeviceLostException(msg, nativeMessage);
            case COMM -> new CommunicatorException(msg, nativeMessage);
            default -> new HspmnException(status, msg, nativeMessage);
        };
    }
}
